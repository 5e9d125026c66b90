package registry

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/shoalfleet/shoal/controlplane/internal/store"
)

// Key layout, all under "registry/" (names and versions never hold '/'):
//
//	registry/version/{name}/{version}  JSON record
//	registry/selftest/{sha256}         shoal.v1.SelfTest (protobuf)
//	registry/ordinal/{name}            uint64, last push ordinal of the model
//	registry/release/{name}            uint64, last release sequence issued
//	registry/profile/{name}/{version}  shoal.v1.ReferenceProfile (protobuf)
const (
	versionPrefix  = "registry/version/"
	selfTestPrefix = "registry/selftest/"
	ordinalPrefix  = "registry/ordinal/"
	releasePrefix  = "registry/release/"
	profilePrefix  = "registry/profile/"
)

// record is a ModelVersion as stored, with its place in push order.
type record struct {
	ModelVersion
	Ordinal uint64 `json:"ordinal"`
}

func versionKey(name, version string) []byte {
	return []byte(versionPrefix + name + "/" + version)
}

func modelPrefix(name string) []byte { return []byte(versionPrefix + name + "/") }

func profileKey(name, version string) []byte {
	return []byte(profilePrefix + name + "/" + version)
}

func selfTestKey(sha string) []byte { return []byte(selfTestPrefix + sha) }

func getRecord(tx store.Tx, name, version string) (record, error) {
	v, err := tx.Get(versionKey(name, version))
	if err != nil {
		return record{}, err
	}
	return decodeRecord(v)
}

func putRecord(tx store.Tx, rec record) error {
	return store.PutJSON(tx, versionKey(rec.Name, rec.Version), rec)
}

// nextCounter increments the uint64 counter at key and returns its new value.
func nextCounter(tx store.Tx, key []byte) (uint64, error) {
	var n uint64
	v, err := tx.Get(key)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return 0, err
	case len(v) != 8:
		return 0, fmt.Errorf("counter %s holds %d bytes; want 8", key, len(v))
	default:
		n = binary.BigEndian.Uint64(v)
	}
	n++
	return n, tx.Set(key, binary.BigEndian.AppendUint64(nil, n))
}
