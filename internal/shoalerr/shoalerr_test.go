package shoalerr

import (
	"errors"
	"fmt"
	"testing"
)

func TestCodeOf(t *testing.T) {
	cause := errors.New("disk")
	err := fmt.Errorf("outer: %w", Wrap(cause, NotFound, "op", "model %q", "m"))
	if CodeOf(err) != NotFound || !Is(err, NotFound) {
		t.Errorf("CodeOf = %v", CodeOf(err))
	}
	if !errors.Is(err, cause) {
		t.Error("cause not wrapped")
	}
	if got := err.Error(); got != `outer: model "m": disk` {
		t.Errorf("Error() = %q", got)
	}
	if CodeOf(cause) != Internal || Is(nil, Internal) {
		t.Error("plain errors must be Internal, nil must be nothing")
	}
}
