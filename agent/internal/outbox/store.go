package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalfleet/shoal/proto/shoal/v1"
)

// The outbox's layout in Badger, and reading its state back (load). Nothing
// here holds state or a lock: the functions work on the transaction or
// database they are given, and the Outbox calls them under Outbox.mu.

// Keys: records under q/ by big-endian sequence (so iteration is oldest
// first), and a few metadata keys under m/.
var (
	recPrefix = []byte("q/")
	keySeq    = []byte("m/seq")        // last sequence assigned
	keyFresh  = []byte("m/drop/fresh") // drops not yet put in a batch
	keySent   = []byte("m/drop/sent")  // drops put in a batch not yet acked
)

func recKey(seq uint64) []byte {
	k := make([]byte, len(recPrefix)+8)
	copy(k, recPrefix)
	binary.BigEndian.PutUint64(k[len(recPrefix):], seq)
	return k
}

func seqOf(key []byte) uint64 { return binary.BigEndian.Uint64(key[len(recPrefix):]) }

func seqBytes(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func get(txn *badger.Txn, key []byte) ([]byte, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return item.ValueCopy(nil)
}

func setProto(txn *badger.Txn, key []byte, m proto.Message) error {
	v, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return txn.Set(key, v)
}

// putReport stores r under key, or deletes key when r is nil.
func putReport(txn *badger.Txn, key []byte, r *shoalv1.DropReport) error {
	if r == nil {
		return txn.Delete(key)
	}
	return setProto(txn, key, r)
}

// diskState is what load reads from a database.
type diskState struct {
	lastSeq     uint64
	head        uint64 // the oldest record, or lastSeq+1
	empty       bool   // no sequence counter and no records: a new database
	count       int
	bytes       int64
	fresh, sent *shoalv1.DropReport
	// lostReports names drop reports that did not decode: skipped, since
	// the records are worth more than moving the database aside for them.
	lostReports []string
}

// load reads the counters and drop reports from db. Records in skip (acked
// while they could not be deleted) are left out of count and bytes.
func load(db *badger.DB, skip seqRanges) (st diskState, err error) {
	err = db.View(func(txn *badger.Txn) error {
		v, err := get(txn, keySeq)
		if err != nil {
			return err
		}
		if len(v) == 8 {
			st.lastSeq = binary.BigEndian.Uint64(v)
		}
		st.empty = v == nil
		for _, r := range []struct {
			key []byte
			dst **shoalv1.DropReport
		}{{keyFresh, &st.fresh}, {keySent, &st.sent}} {
			v, err := get(txn, r.key)
			if err != nil {
				return err
			}
			if v == nil {
				continue
			}
			d := &shoalv1.DropReport{}
			if err := proto.Unmarshal(v, d); err != nil {
				st.lostReports = append(st.lostReports, fmt.Sprintf("%s: %v", r.key, err))
				continue
			}
			*r.dst = d
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: recPrefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			seq := seqOf(item.Key())
			if st.head == 0 {
				st.head = seq
			}
			st.empty = false
			// The counter is written with every record; this only matters
			// if it was lost.
			st.lastSeq = max(st.lastSeq, seq)
			if skip.contains(seq) {
				continue
			}
			st.count++
			st.bytes += item.ValueSize()
		}
		if st.head == 0 {
			st.head = st.lastSeq + 1
		}
		return nil
	})
	return st, err
}
