package testenv

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/claimcheck"
)

// ForgeObjectInfo writes info as the info of object name in the Object
// Store bucket, as a faulty or hostile writer could.
func ForgeObjectInfo(t testing.TB, js jetstream.JetStream, bucket, name string, info jetstream.ObjectInfo) {
	t.Helper()
	info.Name = name
	data, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(claimcheck.MetaSubject(bucket, name))
	msg.Data = data
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	if _, err := js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

// StreamConsumers returns how many consumers stream has.
func StreamConsumers(t testing.TB, js jetstream.JetStream, stream string) int {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}
