package steptest

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/pkg/events"
)

// Events are the messages published on some subjects, as the test awaits
// them, decoded. They are buffered without limit, so none is dropped while
// the test is busy elsewhere.
type Events struct {
	subject string
	mu      sync.Mutex
	queue   []*nats.Msg
	seen    map[string]*nats.Msg // by Nats-Msg-Id, for awaitMsgID
	arrived chan struct{}        // a token when a message may be waiting
}

// Subscribe collects the events published on subject (a core NATS
// subscription, wildcards allowed) until the test's cleanup, for a test
// to await. When it returns, the server knows of the subscription.
func Subscribe(t testing.TB, nc *nats.Conn, subject string) *Events {
	t.Helper()
	return subscribe(t, nc, subject, func(*nats.Msg) bool { return true })
}

// subscribe collects the messages on subject that keep says to keep, until
// the test's cleanup. When it returns, the server knows of the
// subscription.
func subscribe(t testing.TB, nc *nats.Conn, subject string, keep func(*nats.Msg) bool) *Events {
	t.Helper()
	e := &Events{subject: subject, seen: map[string]*nats.Msg{}, arrived: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if !keep(m) {
			return
		}
		e.mu.Lock()
		e.queue = append(e.queue, m)
		e.seen[m.Header.Get(events.HeaderMsgID)] = m
		e.mu.Unlock()
		select {
		case e.arrived <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatalf("steptest: subscribe %s: %v", subject, err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatalf("steptest: subscribe %s: %v", subject, err)
	}
	return e
}

// next returns the next event, or false if none arrives before deadline. A
// message that does not decode fails the test.
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
			return decode(t, m), true
		}
		select {
		case <-e.arrived:
		case <-deadline:
			return nil, false
		}
	}
}

func decode(t testing.TB, m *nats.Msg) *events.Event {
	t.Helper()
	ev, err := events.Decode(m.Subject, m.Header, m.Data)
	if err != nil {
		t.Fatalf("steptest: the step emitted on %s an event that does not decode: %v", m.Subject, err)
	}
	return ev
}

// awaitMsgID waits for the event published with Nats-Msg-Id id (whether
// or not Await took it already).
func (e *Events) awaitMsgID(t testing.TB, id string, within time.Duration) *events.Event {
	t.Helper()
	deadline := time.After(within)
	for {
		e.mu.Lock()
		m := e.seen[id]
		e.mu.Unlock()
		if m != nil {
			return decode(t, m)
		}
		select {
		case <-e.arrived:
		case <-deadline:
			t.Fatalf("steptest: no event with Nats-Msg-Id %s within %v", id, within)
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
			t.Fatalf("steptest: got %d events on %s, want %d", i, e.subject, n)
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
			t.Fatalf("steptest: got events on %s for %d ids, want %d", e.subject, len(got), n)
		}
		got[ev.ID] = append(got[ev.ID], ev)
	}
	return got
}

// None checks that no further event arrives within wait.
func (e *Events) None(t testing.TB, wait time.Duration) {
	t.Helper()
	if ev, ok := e.next(t, time.After(wait)); ok {
		t.Fatalf("steptest: got a %s event of %s on %s, want none", ev.Type, ev.ID, e.subject)
	}
}
