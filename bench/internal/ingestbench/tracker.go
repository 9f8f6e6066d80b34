package ingestbench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/pkg/events"
)

// completion is when the benchmark saw an upload's completed event, and the
// fingerprint the event carries.
type completion struct {
	At     time.Time
	SHA256 string
}

// tracker records the completed events and dead letters of every upload
// from two core NATS subscriptions, and lets a phase wait for a set of
// uploads. Its callbacks only record: the cost per event is a map insert.
type tracker struct {
	mu    sync.Mutex
	done  map[string]completion
	dead  map[string]string // id → reason and error
	waits map[string]*waiter
	subs  []*nats.Subscription
}

// waiter is one wait for a set of uploads.
type waiter struct {
	remaining int
	closed    bool
	err       error
	ch        chan struct{}
}

func (w *waiter) finish(err error) {
	if w.closed {
		return
	}
	w.closed, w.err = true, err
	close(w.ch)
}

const (
	completedPrefix = "uploads.completed."
	deadLetters     = "dlq.uploads.>"
)

// track subscribes to completed events and dead letters. When it returns
// the server knows of both subscriptions.
func track(nc *nats.Conn) (*tracker, error) {
	t := &tracker{done: map[string]completion{}, dead: map[string]string{}, waits: map[string]*waiter{}}
	for subject, handle := range map[string]nats.MsgHandler{
		completedPrefix + ">": t.completed,
		deadLetters:           t.deadLetter,
	} {
		sub, err := nc.Subscribe(subject, handle)
		if err != nil {
			t.close()
			return nil, fmt.Errorf("subscribe %s: %w", subject, err)
		}
		// A burst of completions must never be dropped as a slow consumer.
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			t.close()
			return nil, err
		}
		t.subs = append(t.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

func (t *tracker) close() {
	for _, s := range t.subs {
		_ = s.Unsubscribe()
	}
}

func (t *tracker) completed(m *nats.Msg) {
	at := time.Now()
	id := strings.TrimPrefix(m.Subject, completedPrefix)
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, seen := t.done[id]; seen {
		return
	}
	t.done[id] = completion{At: at, SHA256: m.Header.Get(events.HeaderPrefix + events.ExtSHA256)}
	if w := t.waits[id]; w != nil {
		delete(t.waits, id)
		if w.remaining--; w.remaining == 0 {
			w.finish(nil)
		}
	}
}

func (t *tracker) deadLetter(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	why := "a dead letter without Blobref-Dead headers"
	if d, err := events.ParseDeadLetter(m.Header); err == nil {
		why = fmt.Sprintf("%s at step %s: %s", d.Reason, d.Step, d.Error)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dead[id] = why
	if w := t.waits[id]; w != nil {
		delete(t.waits, id)
		w.finish(fmt.Errorf("upload %s was dead-lettered: %s", id, why))
	}
}

// wait returns the completions of ids once all have completed. It fails
// when one is dead-lettered, when alive reports an error (checked every
// second: a crashed service would otherwise leave it waiting), or when ctx
// ends. No other wait may be waiting for one of ids at the same time.
func (t *tracker) wait(ctx context.Context, ids []string, alive func() error) (map[string]completion, error) {
	w := &waiter{ch: make(chan struct{})}
	t.mu.Lock()
	for _, id := range ids {
		if why, ok := t.dead[id]; ok {
			w.finish(fmt.Errorf("upload %s was dead-lettered: %s", id, why))
			break
		}
		if _, ok := t.done[id]; !ok && t.waits[id] == nil {
			t.waits[id] = w
			w.remaining++
		}
	}
	if w.remaining == 0 {
		w.finish(nil)
	}
	t.mu.Unlock()
	defer t.forget(w)

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-w.ch:
			if w.err != nil {
				return nil, w.err
			}
			t.mu.Lock()
			defer t.mu.Unlock()
			out := make(map[string]completion, len(ids))
			for _, id := range ids {
				out[id] = t.done[id]
			}
			return out, nil
		case <-tick.C:
			if err := alive(); err != nil {
				return nil, err
			}
		case <-ctx.Done():
			t.mu.Lock()
			left := w.remaining
			t.mu.Unlock()
			return nil, fmt.Errorf("%d of %d uploads not completed: %w", left, len(ids), context.Cause(ctx))
		}
	}
}

// forget removes what is left of w's registrations.
func (t *tracker) forget(w *waiter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, x := range t.waits {
		if x == w {
			delete(t.waits, id)
		}
	}
}
