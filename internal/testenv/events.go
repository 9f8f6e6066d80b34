package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step/steptest"
)

// publishTimeout bounds how long a publish waits for JetStream's ack.
const publishTimeout = 10 * time.Second

// Publish publishes ev to JetStream with Nats-Msg-Id msgID, or with none if
// msgID is "" (a new message that JetStream does not de-duplicate). The test
// fails unless JetStream stores it.
func Publish(t testing.TB, js jetstream.JetStream, ev *events.Event, msgID string) {
	t.Helper()
	msg, err := ev.Msg(msgID)
	if err != nil {
		t.Fatalf("Msg: %v", err)
	}
	PublishMsg(t, js, msg)
}

// PublishMsg publishes msg to JetStream as it is, e.g. a malformed event.
// The test fails unless JetStream stores it.
func PublishMsg(t testing.TB, js jetstream.JetStream, msg *nats.Msg) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publish %s: %v", msg.Subject, err)
	}
}

// Events are the events published on a subject since Subscribe, as a
// test awaits them (the step runtime's test helper's, steptest.Events).
type Events = steptest.Events

// Subscribe collects the messages published on subject (a core NATS
// subscription, wildcards allowed) until the test's cleanup. When it
// returns, the server knows of the subscription.
func Subscribe(t testing.TB, nc *nats.Conn, subject string) *Events {
	t.Helper()
	return steptest.Subscribe(t, nc, subject)
}
