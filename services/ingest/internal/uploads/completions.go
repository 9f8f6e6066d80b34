package uploads

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/pkg/events"
)

// completions hands the completed events of uploads to the requests
// waiting for them (Prefer: wait). One core NATS subscription to
// uploads.completed.*, made when the service starts, serves every wait: a
// request registers its wait in memory before it publishes, so it costs
// no round trip, and the completion cannot be missed (the subscription and
// the request's publish share one connection, in order).
type completions struct {
	// completed, if set, is told of every completed event's upload id.
	completed func(id string)

	mu      sync.Mutex
	sub     *nats.Subscription
	waiting map[string][]*waiter
}

// waiter is one request waiting for upload id to complete.
type waiter struct {
	id string
	c  chan *events.Event
}

// The completed events that may wait for deliver at once (every upload's,
// not only the waited ones): past them events are dropped, and the waits
// they would have ended answer 202 when they time out, rather than ingest's
// memory growing.
const (
	pendingEvents = 1 << 16
	pendingBytes  = 8 << 20
)

// completedPrefix is the subject of completed events without the id.
var completedPrefix = events.CompletedSubject("")

// subscribe makes the subscription.
func (c *completions) subscribe(nc *nats.Conn) error {
	sub, err := nc.Subscribe(events.CompletedSubject("*"), c.deliver)
	if err != nil {
		return err
	}
	if err := sub.SetPendingLimits(pendingEvents, pendingBytes); err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	c.mu.Lock()
	c.sub = sub
	c.mu.Unlock()
	return nil
}

// unsubscribe ends the subscription; waits from then on see nothing.
func (c *completions) unsubscribe() {
	c.mu.Lock()
	sub := c.sub
	c.sub = nil
	c.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
}

// wait registers a wait for upload id; nil when there is no subscription to
// wait on. The caller must call done.
func (c *completions) wait(id string) *waiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sub == nil {
		return nil
	}
	if c.waiting == nil {
		c.waiting = map[string][]*waiter{}
	}
	w := &waiter{id: id, c: make(chan *events.Event, 4)}
	c.waiting[id] = append(c.waiting[id], w)
	return w
}

// done ends w's wait.
func (c *completions) done(w *waiter) {
	if w == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.waiting[w.id]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(c.waiting, w.id)
	} else {
		c.waiting[w.id] = ws
	}
}

// deliver is the subscription's handler: it decodes only the events a
// request waits for.
func (c *completions) deliver(msg *nats.Msg) {
	id := strings.TrimPrefix(msg.Subject, completedPrefix)
	if c.completed != nil {
		c.completed(id)
	}
	c.mu.Lock()
	ws := append([]*waiter(nil), c.waiting[id]...)
	c.mu.Unlock()
	if len(ws) == 0 {
		return
	}
	ev, err := events.Decode(msg.Subject, msg.Header, msg.Data)
	if err != nil || ev.Type != events.TypeCompleted || ev.ID != id || ev.Ref == nil {
		return // not the pipeline's completion of this upload
	}
	for _, w := range ws {
		select {
		case w.c <- ev:
		default: // the waiter has events enough to look at
		}
	}
}

// await waits up to sub.Wait for the completed event of the upload st
// describes (its sha256 too) and returns it, or nil when none came in time.
func (w *waiter) await(ctx context.Context, st State, sub Submission) *events.Event {
	ctx, cancel := context.WithTimeout(ctx, sub.Wait)
	defer cancel()
	if sub.Interrupt != nil {
		stop := context.AfterFunc(sub.Interrupt, cancel)
		defer stop()
	}
	for {
		select {
		case ev := <-w.c:
			if ev.SHA256 == st.SHA256 {
				return ev
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// completedState is st once its upload completed with ref, as the completed
// event tells it, without asking Postgres: the steps that finished since st
// was read are dated at, when ingest learnt of them.
func completedState(st State, ref *events.Reference, at time.Time) State {
	st.State, st.Reference, st.DeadLetter = StateCompleted, ref, nil
	if st.Steps.Blob == nil {
		st.Steps.Blob = &Step{At: at}
	}
	st.Steps.Ref = &Step{At: at}
	return st
}
