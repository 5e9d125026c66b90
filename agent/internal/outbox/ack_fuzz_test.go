package outbox

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoalfleet/shoal/internal/fuzzcorpus"
	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// FuzzAckPayload feeds payloads from d/{id}/ack to a Sender over a real
// outbox (Badger in a temporary directory). HandleAckPayload must refuse
// exactly what does not decode as an Ack (or is over MaxAckBytes), queue
// exactly the acks for this device's telemetry in a schema it speaks, and
// applying a queued ack must delete exactly the queued records in its
// range when the range is one the outbox assigned, and nothing otherwise;
// the outbox's count stays that of the records on disk. Seeds:
// testdata/fuzz/FuzzAckPayload, from TestFuzzAckPayloadCorpus.
func FuzzAckPayload(f *testing.F) {
	o, err := Open(f.TempDir(), Options{}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { o.Close() })
	s := NewSender(o, SenderConfig{DeviceID: dev, Topic: topic}, nil, nil)
	next := 0
	f.Fuzz(func(t *testing.T, payload []byte) {
		if o.Len() < 20 {
			for range 40 {
				next++
				if _, err := o.Append(record(next)); err != nil {
					t.Fatal(err)
				}
			}
		}
		before := pendingSeqs(t, o)

		err := s.HandleAckPayload(payload)
		var a shoalv1.Ack
		decodes := len(payload) <= MaxAckBytes && proto.Unmarshal(payload, &a) == nil
		if (err == nil) != decodes {
			t.Fatalf("HandleAckPayload = %v; the payload decodes: %v", err, decodes)
		}
		s.mu.Lock()
		queued := s.acks
		s.acks = nil
		s.mu.Unlock()
		forUs := decodes && a.GetDeviceId() == dev && a.GetStream() == shoalv1.Stream_STREAM_TELEMETRY && a.GetSchemaVersion() <= SchemaVersion
		if forUs != (len(queued) == 1) || len(queued) > 1 {
			t.Fatalf("queued %d acks for %v (for this device's telemetry: %v)", len(queued), &a, forUs)
		}
		if forUs && !proto.Equal(queued[0], &a) {
			t.Fatalf("queued %v; decoded %v", queued[0], &a)
		}
		lastSeq := o.LastSeq()
		for _, q := range queued {
			s.apply(q)
		}

		after := pendingSeqs(t, o)
		first, last := a.GetFirstSeq(), a.GetLastSeq()
		applies := forUs && first <= last && last <= lastSeq
		want := slices.DeleteFunc(slices.Clone(before), func(seq uint64) bool { return applies && seq >= first && seq <= last })
		if !slices.Equal(after, want) {
			t.Fatalf("ack %d..%d (applies: %v) left %v; want %v", first, last, applies, after, want)
		}
		if n := o.Len(); n != len(after) || o.Bytes() < 0 || (n == 0) != (o.Bytes() == 0) {
			t.Fatalf("Len %d, Bytes %d; %d records on disk", n, o.Bytes(), len(after))
		}
	})
}

func pendingSeqs(t *testing.T, o *Outbox) []uint64 {
	t.Helper()
	recs, err := o.Pending(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	return seqs(recs)
}

func fuzzAckSeeds(t *testing.T) []fuzzcorpus.Seed {
	t.Helper()
	seed := func(name string, valid bool, a *shoalv1.Ack) fuzzcorpus.Seed {
		b, err := proto.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		return fuzzcorpus.Seed{Name: name, Valid: valid, Values: []any{b}}
	}
	other := ack(1, 5)
	other.DeviceId = "dev-2"
	stats := ack(1, 5)
	stats.Stream = shoalv1.Stream_STREAM_STATS
	newer := ack(1, 5)
	newer.SchemaVersion = 2
	good := seed("range", true, ack(3, 12))
	return []fuzzcorpus.Seed{
		good,
		seed("one", true, ack(1, 1)),
		seed("everything", true, ack(1, 1<<20)),
		seed("reversed", true, ack(9, 2)),
		seed("other-device", true, other),
		seed("stats-stream", true, stats),
		seed("schema-2", true, newer),
		seed("empty", true, &shoalv1.Ack{}),
		{Name: "truncated", Values: []any{good.Values[0].([]byte)[:len(good.Values[0].([]byte))-1]}},
		{Name: "garbage", Values: []any{[]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}}},
		{Name: "oversize", Values: []any{make([]byte, MaxAckBytes+1)}},
	}
}

// TestFuzzAckPayloadCorpus keeps testdata/fuzz/FuzzAckPayload in step with
// the seeds above (-update-fuzz-corpus rewrites it): valid seeds decode,
// the others are refused.
func TestFuzzAckPayloadCorpus(t *testing.T) {
	s := NewSender(nil, SenderConfig{DeviceID: dev, Topic: topic}, nil, nil)
	fuzzcorpus.Sync(t, "FuzzAckPayload", fuzzAckSeeds(t), func(v []any) error {
		return s.HandleAckPayload(v[0].([]byte))
	})
}
