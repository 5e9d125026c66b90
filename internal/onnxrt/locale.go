package onnxrt

/*
#include <locale.h>
#include <stdlib.h>

static int shoal_has_locale(const char *name) {
	locale_t l = newlocale(LC_ALL_MASK, name, (locale_t)0);
	if (l == (locale_t)0) return 0;
	freelocale(l);
	return 1;
}
*/
import "C"

import (
	"fmt"
	"regexp"
	"unsafe"
)

// LocaleError says that a model asks for a locale this machine does not
// have. ONNX Runtime's StringNormalizer builds a C++ locale from its
// "locale" attribute (en_US.UTF-8 when the exporter leaves it out) when the
// session is made, and fails the whole model when the C library has no
// such locale — as on a stock Debian or container image, which has only C,
// C.UTF-8 and POSIX.
type LocaleError struct {
	// Locale is the name the model asks for.
	Locale string
	// Err is ONNX Runtime's own error.
	Err error
}

func (e *LocaleError) Error() string {
	return fmt.Sprintf("the model's StringNormalizer needs the locale %q, which this machine does not have: "+
		"install it (Debian/Ubuntu: apt-get install locales, uncomment %s in /etc/locale.gen, run locale-gen), "+
		"or export the model with a locale the device has (StringNormalizer's locale attribute, such as \"C.UTF-8\"; `locale -a` lists them)",
		e.Locale, e.Locale)
}

func (e *LocaleError) Unwrap() error { return e.Err }

// HasLocale reports whether the C library can make the named locale, as
// ONNX Runtime's string operators will ask it to.
func HasLocale(name string) bool {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	return C.shoal_has_locale(cs) != 0
}

// ortLocaleFailure matches ONNX Runtime's text for a missing locale
// (core/providers/cpu/text/string_normalizer.cc): "Failed to construct
// locale with name:en_US.UTF-8:locale::facet::... :Please, install
// necessary language-pack-XX and configure locales".
var ortLocaleFailure = regexp.MustCompile(`Failed to construct locale with name:([^:]*):`)

// loadError turns ONNX Runtime's failure to make a session into Shoal's
// error: a *LocaleError when a locale is missing, else a *ModelError.
func loadError(err error) error {
	if m := ortLocaleFailure.FindStringSubmatch(err.Error()); m != nil {
		return &LocaleError{Locale: m[1], Err: err}
	}
	return &ModelError{err}
}

// RequireLocaleForTest skips the test when the machine lacks the locale,
// saying which and how to install it.
func RequireLocaleForTest(t interface {
	Helper()
	Skipf(string, ...any)
}, name string) {
	t.Helper()
	if !HasLocale(name) {
		t.Skipf("needs the %s locale, which this machine lacks (Debian: apt-get install locales && sed -i 's/^# *%s/%s/' /etc/locale.gen && locale-gen; .ci/run does this)", name, name, name)
	}
}
