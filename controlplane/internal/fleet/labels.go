package fleet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
	"github.com/shoalfleet/shoal/internal/names"
	"github.com/shoalfleet/shoal/internal/shoalerr"
	"github.com/shoalfleet/shoal/internal/topics"
)

// Label limits. Keys and values are short identifiers (Kubernetes-like),
// so that selectors are easy to write on a command line and in a URL query.
const (
	MaxLabels        = 32
	MaxLabelKeyLen   = 63
	MaxLabelValueLen = 63
	MaxGroupLen      = 63
)

// checkLabel checks one label. A key is 1–63 characters of
// [A-Za-z0-9._-/] starting with a letter or digit; a value is 0–63
// characters of [A-Za-z0-9._-]. The error names the label.
func checkLabel(key, value string) error {
	if key == "" {
		return errors.New("label key is empty; a key is 1–63 characters of letters, digits, '.', '_', '-' and '/'")
	}
	if len(key) > MaxLabelKeyLen {
		return fmt.Errorf("label key %.20q... is %d characters; at most %d are allowed", key, len(key), MaxLabelKeyLen)
	}
	for i, r := range key {
		switch {
		case isAlnum(r):
		case i == 0:
			return fmt.Errorf("label key %q starts with %q; start it with a letter or digit", key, r)
		case r == '.', r == '_', r == '-', r == '/':
		default:
			return fmt.Errorf("label key %q has %q at position %d; use letters, digits, '.', '_', '-' and '/'", key, r, i)
		}
	}
	if len(value) > MaxLabelValueLen {
		return fmt.Errorf("value of label %q is %d characters; at most %d are allowed", key, len(value), MaxLabelValueLen)
	}
	if i, r, bad := names.FirstBad(value); bad {
		return fmt.Errorf("value %q of label %q has %q at position %d; use letters, digits, '.', '_' and '-'", value, key, r, i)
	}
	return nil
}

// checkGroup checks a group name: a name (names.Check) of at most
// MaxGroupLen characters, like a label value.
func checkGroup(group string) error {
	if len(group) > MaxGroupLen {
		return fmt.Errorf("group %.20q... is %d characters; at most %d are allowed", group, len(group), MaxGroupLen)
	}
	return names.Check("group", group)
}

// checkLabels checks a device's whole label set (keys in order, so that
// the error is the same every time).
func checkLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%d labels given; a device has at most %d", len(labels), MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if err := checkLabel(k, labels[k]); err != nil {
			return err
		}
	}
	return nil
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// Selector picks devices: a device matches if it has every one of Labels
// with exactly that value and, if Group is not empty, is in Group. The
// zero Selector matches every device.
type Selector struct {
	Labels map[string]string
	Group  string
}

// Matches reports whether d is selected.
func (sel Selector) Matches(d Device) bool {
	return sel.matches(d.Labels, d.Group)
}

func (sel Selector) matches(labels map[string]string, group string) bool {
	if sel.Group != "" && group != sel.Group {
		return false
	}
	for k, v := range sel.Labels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ParseSelector parses a label selector written "k=v,k2=v2" (the form of
// the API's ?selector= and the CLI's --selector); "" selects everything.
// Every label must match; a value may be empty ("k=" selects devices with
// label k set to ""). Errors: Invalid, naming the bad part.
func ParseSelector(s string) (map[string]string, error) {
	const op = "fleet.ParseSelector"
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, shoalerr.E(shoalerr.Invalid, op, "selector %q: %q is not key=value; write it like \"env=prod,site=north\"", s, part)
		}
		if err := checkLabel(k, v); err != nil {
			return nil, shoalerr.Wrap(err, shoalerr.Invalid, op, "selector %q", s)
		}
		if old, dup := out[k]; dup && old != v {
			return nil, shoalerr.E(shoalerr.Invalid, op, "selector %q asks for label %q to be both %q and %q; nothing can match", s, k, old, v)
		}
		out[k] = v
	}
	if len(out) > MaxLabels {
		return nil, shoalerr.E(shoalerr.Invalid, op, "selector %q has %d labels; a device has at most %d", s, len(out), MaxLabels)
	}
	return out, nil
}

// CheckSelector checks that sel could match a device: its labels and
// group are well-formed. Errors: Invalid.
func CheckSelector(sel Selector) error {
	const op = "fleet.CheckSelector"
	if err := checkLabels(sel.Labels); err != nil {
		return shoalerr.Wrap(err, shoalerr.Invalid, op, "selector")
	}
	if sel.Group != "" {
		if err := checkGroup(sel.Group); err != nil {
			return shoalerr.Wrap(err, shoalerr.Invalid, op, "selector")
		}
	}
	return nil
}

// SetLabels changes a device's labels and group, with JSON merge-patch
// semantics: each key in labels is set to its value, or removed if the
// value is nil; other labels are kept. group nil leaves the group as it
// is, "" takes the device out of its group. It returns the device as
// changed. Labels do not touch the desired state: nothing is published.
// It waits for a desired-state change in progress (SetDesired, ...) to
// finish.
//
// Errors: Invalid (a label or the group is malformed, or the device would
// have more than MaxLabels labels; nothing is changed), NotFound (device).
func (s *Service) SetLabels(ctx context.Context, id string, labels map[string]*string, group *string) (Device, error) {
	const op = "fleet.SetLabels"
	if err := ctx.Err(); err != nil {
		return Device{}, err
	}
	if topics.ValidateDeviceID(id) != nil {
		return Device{}, shoalerr.E(shoalerr.NotFound, op, "device %q is not enrolled (and is not a valid device id)", id)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		v := ""
		if labels[k] != nil {
			v = *labels[k]
		}
		if err := checkLabel(k, v); err != nil {
			return Device{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "cannot label device %q", id)
		}
	}
	if group != nil && *group != "" {
		if err := checkGroup(*group); err != nil {
			return Device{}, shoalerr.Wrap(err, shoalerr.Invalid, op, "cannot set the group of device %q", id)
		}
	}
	s.desiredMu.Lock()
	defer s.desiredMu.Unlock()
	var rec deviceRecord
	err := store.Retry(s.st, storeAttempts, func(tx store.Tx) error {
		rec = deviceRecord{}
		found, err := store.GetJSON(tx, deviceKey(id), &rec)
		if err != nil {
			return err
		}
		if !found {
			return shoalerr.E(shoalerr.NotFound, op, "device %q is not enrolled", id)
		}
		next := maps.Clone(rec.Labels)
		if next == nil {
			next = map[string]string{}
		}
		for k, v := range labels {
			if v == nil {
				delete(next, k)
			} else {
				next[k] = *v
			}
		}
		if len(next) > MaxLabels {
			return shoalerr.E(shoalerr.Invalid, op, "device %q would have %d labels; at most %d are allowed, so remove some", id, len(next), MaxLabels)
		}
		if len(next) == 0 {
			next = nil
		}
		changed := !maps.Equal(next, rec.Labels)
		rec.Labels = next
		if group != nil && *group != rec.Group {
			rec.Group = *group
			changed = true
		}
		if !changed {
			return nil
		}
		return store.PutJSON(tx, deviceKey(id), rec)
	})
	if err != nil {
		if _, ok := errors.AsType[*shoalerr.Error](err); ok {
			return Device{}, err
		}
		return Device{}, shoalerr.Wrap(err, shoalerr.Internal, op, "store labels of device %q", id)
	}
	// The reported state is read apart, so that a device reporting while
	// it is labelled is no write conflict.
	var st stateRecord
	if err := s.st.View(func(tx store.Tx) error {
		_, err := store.GetJSON(tx, stateKey(id), &st)
		return err
	}); err != nil {
		return Device{}, shoalerr.Wrap(err, shoalerr.Internal, op, "read device %q", id)
	}
	return s.view(rec, st), nil
}
