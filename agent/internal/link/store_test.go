package link

import (
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// TestStoreCopiesPublish: the PUBLISH paho's resume() gets to flag as a
// duplicate is neither the one the outgoing goroutine may be writing nor
// the stored one.
func TestStoreCopiesPublish(t *testing.T) {
	s := newStore()
	s.Open()
	defer s.Close()
	pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pub.Qos, pub.MessageID, pub.TopicName, pub.Payload = 1, 7, "t", []byte("x")
	s.Put("o.7", pub)
	pub.RemainingLength = 99 // the outgoing goroutine writing it
	got, ok := s.Get("o.7").(*packets.PublishPacket)
	if !ok || got == pub || got.MessageID != 7 || string(got.Payload) != "x" || got.RemainingLength == 99 {
		t.Fatalf("Get = %#v; want a copy of the publish as stored", got)
	}
	got.Dup = true
	if again := s.Get("o.7").(*packets.PublishPacket); again.Dup || again == got {
		t.Fatal("setting DUP on what Get returned changed the stored packet")
	}
	sub := packets.NewControlPacket(packets.Subscribe)
	s.Put("o.8", sub)
	if s.Get("o.8") != sub {
		t.Error("the store copied a packet other than a PUBLISH")
	}
	if s.Get("o.9") != nil {
		t.Error("Get of a missing key is not nil")
	}
	s.Del("o.7")
	if s.Get("o.7") != nil {
		t.Error("Del did not delete")
	}
}
