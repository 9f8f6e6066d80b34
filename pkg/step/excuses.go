package step

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/blobref/blobref/pkg/step/internal/marker"
)

// excuses remembers the deliveries the runner handed back because a
// dependency was down, and writes them to Postgres (marker.Store.Excuse)
// as soon as it can: usually once the outage is over. A message's excused
// deliveries are read only when it reaches its delivery limit. What a crash
// loses is only the excuses not yet written, so a message may then be
// dead-lettered sooner than it should, never later.
type excuses struct {
	step    string
	store   *marker.Store
	log     *slog.Logger
	metrics *Metrics
	wake    chan struct{} // a new excuse to write

	// No database call is made under mu: a batch that holds a connection
	// may wait for it.
	mu       sync.Mutex
	pending  map[marker.Delivery]int // not written yet
	inflight map[marker.Delivery]int // being written
}

func newExcuses(step string, store *marker.Store, o Options) *excuses {
	return &excuses{
		step: step, store: store, log: o.Logger, metrics: o.Metrics,
		wake:    make(chan struct{}, 1),
		pending: make(map[marker.Delivery]int), inflight: make(map[marker.Delivery]int),
	}
}

// add excuses one delivery of d.
func (e *excuses) add(d marker.Delivery) {
	e.mu.Lock()
	e.pending[d]++
	e.mu.Unlock()
	e.metrics.excused(e.step)
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// unwritten returns the excused deliveries of d not written yet. Read
// before the written ones, it may count one twice (when a write ends in
// between), never miss one: an excuse too many delays a dead letter by a
// delivery, one too few could dead-letter good work.
func (e *excuses) unwritten(d marker.Delivery) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pending[d] + e.inflight[d]
}

// counts returns the excused deliveries of each of ds: those written and
// those waiting to be.
func (e *excuses) counts(ctx context.Context, ds []marker.Delivery) (map[marker.Delivery]int, error) {
	mem := make(map[marker.Delivery]int, len(ds))
	for _, d := range ds {
		mem[d] = e.unwritten(d)
	}
	found, err := e.store.Excused(ctx, e.step, ds)
	if err != nil {
		return nil, err
	}
	for d, n := range mem {
		found[d] += n
	}
	return found, nil
}

// flush writes the pending excuses; those it could not write stay pending.
func (e *excuses) flush(ctx context.Context) error {
	e.mu.Lock()
	if len(e.pending) == 0 {
		e.mu.Unlock()
		return nil
	}
	e.pending, e.inflight = e.inflight, e.pending // inflight was empty
	batch := e.inflight
	e.mu.Unlock()
	err := e.store.Excuse(ctx, e.step, batch)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		for d, n := range batch {
			e.pending[d] += n
		}
	}
	e.inflight = make(map[marker.Delivery]int)
	return err
}

// run writes excuses as they come, while ready says Postgres is usable,
// retrying a failed write after a growing delay, until ctx is done. Then
// it makes one last attempt.
func (e *excuses) run(ctx context.Context, ready func() bool, changed func() <-chan struct{}) {
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := e.flush(fctx); err != nil {
			e.log.Warn("excused deliveries not written", "step", e.step, "error", err)
		}
	}()
	delay := 100 * time.Millisecond
	for {
		select {
		case <-e.wake:
		case <-ctx.Done():
			return
		}
		for {
			for {
				change := changed()
				if ready() {
					break
				}
				select {
				case <-change:
				case <-ctx.Done():
					return
				}
			}
			wctx, cancel := context.WithTimeout(ctx, settleTimeout)
			err := e.flush(wctx)
			cancel()
			if err == nil {
				delay = 100 * time.Millisecond
				break
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			delay = min(2*delay, 5*time.Second)
		}
	}
}
