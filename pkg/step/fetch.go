package step

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// window fetches until ctx is done, keeping at most MaxInFlight messages
// fetched and not yet settled, and hands them to batches (see fetch); it
// returns once the last batch is over. Nothing is fetched while a
// dependency is down.
//
// One slot per message in flight: a pull asks for as many messages as slots
// are free, so nothing waits in a client buffer while its AckWait runs, and
// the window, not the backlog, bounds memory. A message gives its slot back
// when it is settled.
func (r *Runner[R]) window(ctx, work context.Context, cons jetstream.Consumer) {
	slots := make(chan struct{}, r.opts.MaxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		r.breaker.wait(ctx)
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		free := 1
	fill:
		for free < r.opts.MaxInFlight {
			select {
			case slots <- struct{}{}:
				free++
			default:
				break fill
			}
		}
		n, err := r.fetch(ctx, work, cons, free, slots, &wg)
		for ; n < free; n++ {
			<-slots
		}
		if err != nil && ctx.Err() == nil {
			err = Dependency(DependencyJetStream, err)
			if o, ok := classify(err); ok && r.breaker.report(ctx, o, err) {
				continue // the breaker says so, once, and waits for it
			}
			r.opts.Logger.Warn("fetch failed", "step", r.step.Name, "error", err)
			sleep(ctx, time.Second)
		}
	}
	r.opts.Logger.Info("stopping: fetching no more, finishing the messages in flight", "step", r.step.Name)
}

// fetch pulls up to n messages and hands them to batches as they arrive. A
// batch starts with the first message; it is handed to a worker once it
// holds BatchSize messages, or nothing more is pending for the consumer and
// no other batch runs (checked again as each batch ends), or BatchWait has
// passed, and a worker is free: at most MaxBatches batches run at once, and
// while they all run, the next batch grows. So a light load (nothing running
// when a message arrives) goes through in batches of one at once, a
// moderate one in batches of what arrives within BatchWait while other
// batches run (each batch costs a claim and a transaction however small it
// is), and a heavy one in full batches with no wait. fetch returns how many
// messages it received; each frees its slot when settled.
func (r *Runner[R]) fetch(ctx, work context.Context, cons jetstream.Consumer, n int, slots chan struct{}, wg *sync.WaitGroup) (int, error) {
	fctx, cancel := context.WithTimeout(ctx, r.opts.FetchWait)
	defer cancel()
	pull, err := cons.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		return 0, err
	}
	received := 0
	var (
		batch []*job[R]
		timer *time.Timer
		wait  <-chan time.Time // BatchWait of the batch, until it passed
		// idle: nothing was pending behind the batch's last message, so
		// it waits only while other batches run.
		idle bool
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for msgs := pull.Messages(); msgs != nil || len(batch) > 0; {
		in, workers := msgs, (chan<- struct{})(nil)
		full := len(batch) >= r.opts.BatchSize
		if full {
			in = nil // wait for a worker
		}
		if len(batch) > 0 && (full || wait == nil || msgs == nil) {
			workers = r.batches
		}
		var ended <-chan struct{}
		if idle && wait != nil {
			ended = r.ended
		}
		select {
		case msg, ok := <-in:
			if !ok {
				msgs = nil
				continue
			}
			received++
			j := r.received(msg, slots)
			if r.breaker.paused() {
				r.handBack(j)
				continue
			}
			batch = append(batch, j)
			r.opts.Metrics.inFlightAdd(r.step.Name, 1) // in a batch: in the runner's hands
			if len(batch) == 1 {
				if timer == nil {
					timer = time.NewTimer(r.opts.BatchWait)
				} else {
					timer.Reset(r.opts.BatchWait)
				}
				wait = timer.C
			}
			idle = j.meta != nil && j.meta.NumPending == 0
			if idle && len(r.batches) == 0 {
				wait = nil // nothing more to wait for, and no batch to share the load with
			}
		case <-ended:
			if len(r.batches) == 0 {
				wait = nil // the batches it waited beside are over
			}
		case <-wait:
			wait = nil
		case workers <- struct{}{}:
			timer.Stop()
			ready := batch
			batch, wait, idle = nil, nil, false
			r.opts.Metrics.batch(r.step.Name, len(ready))
			wg.Add(1)
			r.workers.Go(func() {
				defer wg.Done()
				defer func() {
					<-r.batches
					select {
					case r.ended <- struct{}{}:
					default: // a signal is pending already
					}
				}()
				r.handle(ctx, work, ready)
			})
		}
	}
	if err := pull.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && !errors.Is(err, jetstream.ErrNoHeartbeat) {
		return received, err
	}
	return received, nil
}

// received is a message just fetched, in its slot of the window.
func (r *Runner[R]) received(msg jetstream.Msg, slots chan struct{}) *job[R] {
	j := &job[R]{msg: msg, free: func() { <-slots }, start: time.Now()}
	j.meta, j.metaErr = msg.Metadata()
	j.out = Outcome{Subject: msg.Subject()}
	if j.meta != nil {
		j.out.Deliveries, j.out.Stream, j.out.Sequence = j.meta.NumDelivered, j.meta.Stream, j.meta.Sequence.Stream
	}
	return j
}

// handBack settles a message fetched while a dependency is down without
// running it: it is retried, and its delivery is excused.
func (r *Runner[R]) handBack(j *job[R]) {
	r.opts.Metrics.inFlightAdd(r.step.Name, 1)
	dep, _ := r.breaker.excusing()
	j.retry(reasonOutage, fmt.Errorf("not run: %s is down", dep))
	j.out.Outage = dep
	r.settle(j)
}
