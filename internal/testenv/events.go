package testenv

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
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

// Events holds the messages published on a subject since Subscribe, in
// order, for a test to await as decoded events. It buffers without limit, so
// no message is dropped while the test is busy elsewhere.
type Events struct {
	subject string
	mu      sync.Mutex
	queue   []*nats.Msg
	arrived chan struct{} // a token when a message may be waiting
}

// Subscribe collects the messages published on subject (a core NATS
// subscription, wildcards allowed) until the test's cleanup. When it
// returns, the server knows of the subscription.
func Subscribe(t testing.TB, nc *nats.Conn, subject string) *Events {
	t.Helper()
	e := &Events{subject: subject, arrived: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		e.mu.Lock()
		e.queue = append(e.queue, m)
		e.mu.Unlock()
		select {
		case e.arrived <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	return e
}

// next returns the next event, or false if none arrives before deadline.
// A message that does not decode as an event fails the test.
func (e *Events) next(t testing.TB, deadline <-chan time.Time) (*events.Event, bool) {
	t.Helper()
	for {
		e.mu.Lock()
		var m *nats.Msg
		if len(e.queue) > 0 {
			m, e.queue = e.queue[0], e.queue[1:]
		}
		e.mu.Unlock()
		if m != nil {
			ev, err := events.Decode(m.Subject, m.Header, m.Data)
			if err != nil {
				t.Fatalf("event on %s does not decode: %v", m.Subject, err)
			}
			return ev, true
		}
		select {
		case <-e.arrived:
		case <-deadline:
			return nil, false
		}
	}
}

// Await waits up to within for the next n events and returns them by
// upload id, in the order they arrived.
func (e *Events) Await(t testing.TB, n int, within time.Duration) map[string][]*events.Event {
	t.Helper()
	got := map[string][]*events.Event{}
	deadline := time.After(within)
	for i := range n {
		ev, ok := e.next(t, deadline)
		if !ok {
			t.Fatalf("got %d events on %s, want %d", i, e.subject, n)
		}
		got[ev.ID] = append(got[ev.ID], ev)
	}
	return got
}

// AwaitIDs waits up to within for events of n distinct upload ids, however
// many events that takes, and returns them by upload id.
func (e *Events) AwaitIDs(t testing.TB, n int, within time.Duration) map[string][]*events.Event {
	t.Helper()
	got := map[string][]*events.Event{}
	deadline := time.After(within)
	for len(got) < n {
		ev, ok := e.next(t, deadline)
		if !ok {
			t.Fatalf("got events on %s for %d ids, want %d", e.subject, len(got), n)
		}
		got[ev.ID] = append(got[ev.ID], ev)
	}
	return got
}

// None checks that no further event arrives within wait.
func (e *Events) None(t testing.TB, wait time.Duration) {
	t.Helper()
	if ev, ok := e.next(t, time.After(wait)); ok {
		t.Fatalf("got %s event of %s on %s, want none", ev.Type, ev.ID, e.subject)
	}
}
