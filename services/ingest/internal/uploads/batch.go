package uploads

import (
	"slices"
	"sync"
	"time"
)

// batcher groups the items submitted at about the same time into batches
// and runs flush on each batch, at most lanes batches at once: a group
// commit. It has no goroutine of its own. A caller that finds a lane free
// flushes the queue (its own item first) and, once its item is done, hands
// the lane to the oldest item still queued, which flushes everything queued
// meanwhile as the next batch. At low load every item is flushed at once, on
// its own; under load the batches grow by themselves.
//
// With spill set, a lane past the first opens only for the item at the head
// of the queue once it has waited spill: the batcher runs one lane, which
// makes the largest batches, until a batch stalls (its dependency is slow
// or down), and then the items behind it are flushed beside it rather than
// wait for it, each to its own outcome.
type batcher[T any] struct {
	flush func([]T)
	lanes int           // batches flushed at once
	size  int           // most items in a batch
	spill time.Duration // how long the head of the queue waits before a lane past the first opens (0: at once)

	mu    sync.Mutex
	busy  int // lanes in use
	queue []*ticket[T]
}

// ticket is an item waiting in the queue or being flushed.
type ticket[T any] struct {
	item   T
	lead   chan struct{} // a lane was handed to this ticket
	handed bool          // lead was signalled (under mu)
	done   chan struct{} // the item's batch was flushed
}

func newBatcher[T any](lanes, size int, spill time.Duration, flush func([]T)) *batcher[T] {
	return &batcher[T]{flush: flush, lanes: max(lanes, 1), size: max(size, 1), spill: spill}
}

// do submits item and returns once flush has run on a batch holding it.
func (b *batcher[T]) do(item T) {
	t := &ticket[T]{item: item, lead: make(chan struct{}, 1), done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, t)
	if b.busy < b.lanes && (b.busy == 0 || b.spill <= 0) {
		b.busy++
		b.mu.Unlock()
		b.run(t)
		return
	}
	var spill <-chan time.Time
	if b.busy < b.lanes && len(b.queue) == 1 { // the head, with a lane to spill to
		timer := time.NewTimer(b.spill)
		defer timer.Stop()
		spill = timer.C
	}
	b.mu.Unlock()
	if spill != nil {
		select {
		case <-spill:
			if b.open(t) {
				b.run(t)
				return
			}
		case <-t.lead:
			b.run(t)
			return
		case <-t.done:
		}
	}
	select {
	case <-t.lead:
		b.run(t)
	case <-t.done:
		// Flushed by another lane. A ticket leaves the queue before it is
		// done and is handed a lane only while queued: if none came before,
		// none will.
		select {
		case <-t.lead:
			b.run(t)
		default:
		}
	}
}

// open gives t a lane of its own, if one is free and t is still queued
// with none handed to it yet.
func (b *batcher[T]) open(t *ticket[T]) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.handed || b.busy >= b.lanes || !slices.Contains(b.queue, t) {
		return false
	}
	t.handed = true // handOff passes it over
	b.busy++
	return true
}

// run holds a lane: it flushes batches from the head of the queue until t
// is done, then hands the lane on.
func (b *batcher[T]) run(t *ticket[T]) {
	for !closed(t.done) {
		batch := b.take()
		if len(batch) == 0 {
			<-t.done // t is in another lane's batch
			break
		}
		items := make([]T, len(batch))
		for i, x := range batch {
			items[i] = x.item
		}
		b.flush(items)
		for _, x := range batch {
			close(x.done)
		}
	}
	b.handOff()
}

// take removes the next batch from the head of the queue.
func (b *batcher[T]) take() []*ticket[T] {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(len(b.queue), b.size)
	batch := append([]*ticket[T](nil), b.queue[:n]...)
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	return batch
}

// handOff gives the caller's lane to the oldest queued ticket that has none
// yet, or frees it.
func (b *batcher[T]) handOff() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.queue {
		if !t.handed {
			t.handed = true
			t.lead <- struct{}{}
			return
		}
	}
	b.busy--
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
