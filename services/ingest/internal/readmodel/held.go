package readmodel

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// batch is facts to apply in one statement and the messages to settle once
// they are: each message's fact, if it has one, is among facts.
type batch struct {
	facts []Fact
	msgs  []jetstream.Msg
}

func (b *batch) add(o batch) {
	b.facts = append(b.facts, o.facts...)
	b.msgs = append(b.msgs, o.msgs...)
}

// addHeld adds a held fact and its messages.
func (b *batch) addHeld(e *heldFact) {
	b.facts = append(b.facts, e.fact)
	b.msgs = append(b.msgs, e.msgs...)
}

// ids are the uploads b's facts are of.
func (b batch) ids() []string {
	ids := make([]string, len(b.facts))
	for i, f := range b.facts {
		ids[i] = f.ID
	}
	return ids
}

// held keeps blob_stored facts back, each until the statement of its
// upload's completion (or dead letter) takes it, or for at most hold.
// Applied together, the two facts write the upload's row once, in one
// statement, where one after the other they write it twice, in two: the
// blob_stored event comes a few milliseconds before the completed one.
// The messages stay unacknowledged while held, so a crash loses nothing:
// JetStream redelivers them.
type held struct {
	hold time.Duration
	max  int // the most facts held; past it the oldest are released

	mu    sync.Mutex
	byID  map[string]*heldFact
	queue []*heldFact // in the order held; taken ones stay until they reach the front
}

type heldFact struct {
	fact  Fact            // merged from each delivery of the upload's blob_stored event
	msgs  []jetstream.Msg // those deliveries
	due   time.Time
	taken bool
}

func newHeld(hold time.Duration, maxFacts int) *held {
	return &held{hold: hold, max: maxFacts, byID: make(map[string]*heldFact)}
}

// put holds b's facts (a fact with its message), and returns those due at
// now: held for hold, or the oldest past max.
func (h *held) put(b batch, now time.Time) batch {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, f := range b.facts {
		if e, ok := h.byID[f.ID]; ok { // a redelivery or a republish
			e.fact = merged(e.fact, f)
			e.msgs = append(e.msgs, b.msgs[i])
			continue
		}
		e := &heldFact{fact: f, msgs: []jetstream.Msg{b.msgs[i]}, due: now.Add(h.hold)}
		h.byID[f.ID] = e
		h.queue = append(h.queue, e)
	}
	return h.releaseLocked(now)
}

// take releases the facts held for ids, and those due at now.
func (h *held) take(ids []string, now time.Time) batch {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out batch
	for _, id := range ids {
		if e, ok := h.byID[id]; ok {
			delete(h.byID, id)
			e.taken = true
			out.addHeld(e)
		}
	}
	out.add(h.releaseLocked(now))
	return out
}

// all releases every fact held.
func (h *held) all() batch {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.releaseLocked(time.Time{})
}

// releaseLocked releases from the front of the queue what is due at now,
// or over max; the zero now releases everything.
func (h *held) releaseLocked(now time.Time) batch {
	var out batch
	for len(h.queue) > 0 {
		e := h.queue[0]
		if !e.taken && !now.IsZero() && now.Before(e.due) && len(h.byID) <= h.max {
			break
		}
		h.queue[0] = nil
		h.queue = h.queue[1:]
		if !e.taken {
			delete(h.byID, e.fact.ID)
			out.addHeld(e)
		}
	}
	return out
}

// next is when the oldest fact held is due; ok is false when none is held.
func (h *held) next() (due time.Time, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.queue {
		if !e.taken {
			return e.due, true
		}
	}
	return time.Time{}, false
}
