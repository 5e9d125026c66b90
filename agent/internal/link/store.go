package link

import (
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// copyingStore is paho's MemoryStore holding its own copy of each PUBLISH.
// On every connect with clean session off, paho's resume() Gets each stored
// PUBLISH and sets its DUP flag to resend it, while the outgoing goroutine
// may be writing that very packet (Write sets its length): a data race
// (eclipse-paho/paho.mqtt.golang#703), seen under -race when an agent
// restarts or reconnects with a publish in flight. Put stores a copy (paho
// Puts a publish before handing it to the outgoing goroutine) and Get
// returns a copy, so the stored packet is never shared: resume flags and
// resends a packet of its own.
type copyingStore struct{ *mqtt.MemoryStore }

func newStore() mqtt.Store { return copyingStore{mqtt.NewMemoryStore()} }

func (s copyingStore) Put(key string, p packets.ControlPacket) {
	s.MemoryStore.Put(key, copyPublish(p))
}

func (s copyingStore) Get(key string) packets.ControlPacket {
	return copyPublish(s.MemoryStore.Get(key))
}

// copyPublish returns a shallow copy of a PUBLISH (the payload is never
// written after the publish is made) and any other packet as it is.
func copyPublish(p packets.ControlPacket) packets.ControlPacket {
	if pub, ok := p.(*packets.PublishPacket); ok {
		c := *pub
		return &c
	}
	return p
}
