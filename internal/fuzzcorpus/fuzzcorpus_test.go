package fuzzcorpus

import (
	"reflect"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	in := []any{[]byte("a\x00\xff\"é"), "s\n\t\x80", byte(0), byte('\''), byte(0xfe), true, false, int64(-3), uint64(1 << 63), uint32(7), int(-1)}
	b, err := Marshal(in...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Unmarshal(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n got %#v\nwant %#v\n%s", out, in, b)
	}
}

// TestReadsGoFormat checks files as the go command writes them.
func TestReadsGoFormat(t *testing.T) {
	out, err := Unmarshal([]byte("go test fuzz v1\nbyte('\\x05')\nstring(\"{\\\"a\\\":1}\")\n[]byte(\"\\x00\")\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []any{byte(5), `{"a":1}`, []byte{0}}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("got %#v; want %#v", out, want)
	}
	for _, bad := range []string{"", "go test fuzz v2\nstring(\"\")", "go test fuzz v1\n", "go test fuzz v1\nstring(x)", "go test fuzz v1\nfloat32(1)", "go test fuzz v1\nbyte('\\u1234')", "go test fuzz v1\nuint64(-1)"} {
		if _, err := Unmarshal([]byte(bad)); err == nil {
			t.Errorf("Unmarshal(%q) accepted", bad)
		}
	}
	if _, err := Marshal(1.5); err == nil {
		t.Error("Marshal(float64) accepted")
	}
}

func TestAllocated(t *testing.T) {
	var keep []byte
	n := Allocated(func() { keep = make([]byte, 1<<20) })
	if n < 1<<20 || n > 2<<20 {
		t.Errorf("Allocated(1 MiB) = %d", n)
	}
	if len(keep) != 1<<20 {
		t.Fatal(len(keep))
	}
	// What the budget is for: a small input that makes a decoder allocate
	// tens of MiB.
	if n := Allocated(func() { keep = make([]byte, 64<<20) }); n <= AllocBudget(100) {
		t.Errorf("64 MiB for a 100-byte input (%d bytes counted) is within the budget %d", n, AllocBudget(100))
	}
}
