package api

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/shoalfleet/shoal/controlplane/internal/dataset"
	"github.com/shoalfleet/shoal/controlplane/internal/jobs"
	"github.com/shoalfleet/shoal/controlplane/internal/loop"
	"github.com/shoalfleet/shoal/controlplane/internal/registry"
)

// filled returns a T with every exported field set, recursively, to a
// value of its own (slices and maps of one element), so that a
// conversion that drops or mixes up a field shows in its JSON.
func filled[T any]() T {
	var v T
	n := 0
	fill(reflect.ValueOf(&v).Elem(), &n)
	return v
}

func fill(v reflect.Value, n *int) {
	*n++
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(*n) * time.Second)))
		return
	case v.Type() == reflect.TypeFor[json.RawMessage]():
		v.Set(reflect.ValueOf(json.RawMessage(fmt.Sprintf(`{"n":%d}`, *n))))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", *n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), n)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, n)
		fill(e, n)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	}
}

// sameJSON checks that a record and its view encode to the same bytes.
func sameJSON(t *testing.T, name string, record, view any) {
	t.Helper()
	a, err := json.Marshal(record)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(view)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("%s: the view's JSON is not the record's:\nrecord %s\nview   %s", name, a, b)
	}
}

// TestViewsKeepTheWire: each record the API converts to an apiv1 type
// encodes as it did before it was converted, filled and empty; requests
// converted back lose nothing.
func TestViewsKeepTheWire(t *testing.T) {
	for _, tc := range []struct {
		name   string
		record func(filled bool) any
		view   func(any) any
	}{
		{"model version", func(f bool) any { return pick(f, filled[registry.ModelVersion]) },
			func(r any) any { return modelVersionView(r.(registry.ModelVersion)) }},
		{"dataset version", func(f bool) any { return pick(f, filled[dataset.Version]) },
			func(r any) any { return datasetVersionView(r.(dataset.Version)) }},
		{"dataset summary", func(f bool) any { return pick(f, filled[dataset.Summary]) },
			func(r any) any { return datasetSummaryView(r.(dataset.Summary)) }},
		{"job", func(f bool) any { return pick(f, filled[jobs.Job]) },
			func(r any) any { return jobView(r.(jobs.Job)) }},
		{"job spec", func(f bool) any { return pick(f, filled[jobs.Spec]) },
			func(r any) any { return jobSpecView(r.(jobs.Spec)) }},
		{"loop policy", func(f bool) any { return pick(f, filled[loop.Policy]) },
			func(r any) any { return loopPolicyView(r.(loop.Policy)) }},
		{"loop run", func(f bool) any { return pick(f, filled[loop.Run]) },
			func(r any) any { return loopRunView(r.(loop.Run)) }},
	} {
		for _, f := range []bool{true, false} {
			r := tc.record(f)
			sameJSON(t, fmt.Sprintf("%s (filled %v)", tc.name, f), r, tc.view(r))
		}
	}

	spec := filled[jobs.Spec]()
	if back := jobSpecOf(jobSpecView(spec)); !reflect.DeepEqual(back, spec) {
		t.Errorf("job spec → apiv1 → job spec:\n got %+v\nwant %+v", back, spec)
	}
	pol := filled[loop.Policy]()
	if back := loopPolicyOf(loopPolicyView(pol)); !reflect.DeepEqual(back, pol) {
		t.Errorf("loop policy → apiv1 → loop policy:\n got %+v\nwant %+v", back, pol)
	}
}

// pick returns a filled T, or T's zero value.
func pick[T any](filled bool, f func() T) any {
	if filled {
		return f()
	}
	var zero T
	return zero
}
