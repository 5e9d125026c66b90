package apiv1

import (
	"encoding/json"
	"fmt"
	"reflect"
	"time"
)

// Duration is a time.Duration written as a Go duration string in JSON:
// "30s", "1h30m".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string ("30s", "1h30m").
func (d *Duration) UnmarshalJSON(b []byte) error {
	// An UnmarshalTypeError lets encoding/json name the field.
	bad := &json.UnmarshalTypeError{Value: fmt.Sprintf("%s (want a duration such as \"30s\" or \"2h\")", b), Type: reflect.TypeFor[Duration]()}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return bad
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return bad
	}
	*d = Duration(v)
	return nil
}
