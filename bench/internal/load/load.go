// Package load is the benchmark's side of the pipeline's traffic: it builds
// request events the way a producer does (pkg/events), publishes them to
// JetStream as fast as it accepts them or at a set rate, remembering when
// each was published, and records when each upload's completed event
// arrives.
package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"
	"github.com/blobref/blobref/bench/internal/stats"
	"github.com/blobref/blobref/pkg/events"
)

// Upload is one upload of a benchmark: its request event and what the
// pipeline will make of it.
type Upload struct {
	ID   string
	Data []byte
	// Request is the request event.
	Request *events.Event
}

// Set is the uploads of one measurement, with ids Prefix + a fixed-width
// index, so that a completed event's subject leads back to its index
// without a map.
type Set struct {
	Prefix  string
	Uploads []Upload
}

// idDigits is the width of an upload's index in its id.
const idDigits = 8

// NewSet builds n uploads of size bytes each: a random block (seeded by
// seed) with the upload's id written over its start, so that no two share a
// fingerprint. Every upload has its own CloudEvent subject.
func NewSet(prefix string, n, size int, seed uint64) (*Set, error) {
	block := make([]byte, size)
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	rng := rand.NewChaCha8(key)
	_, _ = rng.Read(block)
	s := &Set{Prefix: prefix, Uploads: make([]Upload, n)}
	for i := range n {
		u, err := s.build(i, block)
		if err != nil {
			return nil, err
		}
		s.Uploads[i] = u
	}
	return s, nil
}

func (s *Set) build(i int, block []byte) (Upload, error) {
	id := s.ID(i)
	data := append([]byte(nil), block...)
	copy(data, id)
	ev, err := events.NewRequested(events.Request{
		ID: id, Source: "/blobref/bench", Subject: "bench/" + id, ContentType: "application/octet-stream", Data: data,
	})
	if err != nil {
		return Upload{}, fmt.Errorf("load: %w", err)
	}
	return Upload{ID: id, Data: data, Request: ev}, nil
}

// ID is the id of upload i.
func (s *Set) ID(i int) string { return fmt.Sprintf("%s%0*d", s.Prefix, idDigits, i) }

// IDs are the ids of the uploads, in order.
func (s *Set) IDs() []string {
	out := make([]string, len(s.Uploads))
	for i, u := range s.Uploads {
		out[i] = u.ID
	}
	return out
}

// Sample is n uploads of the set spread evenly over it (all of them when n
// is larger), as the pipeline should have made them.
func (s *Set) Sample(n int) []pipeline.Expected {
	n = min(n, len(s.Uploads))
	out := make([]pipeline.Expected, 0, n)
	for k := range n {
		u := s.Uploads[k*len(s.Uploads)/n]
		out = append(out, pipeline.Expected{
			ID: u.ID, Subject: u.Request.Subject, ContentType: u.Request.ContentType,
			Size: int64(len(u.Data)), SHA256: u.Request.SHA256,
		})
	}
	return out
}

// Index is the index of upload id, or -1 when id is not of this set.
func (s *Set) Index(id string) int {
	rest, ok := strings.CutPrefix(id, s.Prefix)
	if !ok || len(rest) != idDigits {
		return -1
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || i >= len(s.Uploads) {
		return -1
	}
	return i
}

// Msgs returns the request messages of the set, with Nats-Msg-Id = upload
// id + suffix ("" the first time, as a producer does; another suffix to
// publish them again inside JetStream's de-duplication window).
func (s *Set) Msgs(suffix string) ([]*nats.Msg, error) {
	out := make([]*nats.Msg, len(s.Uploads))
	for i, u := range s.Uploads {
		m, err := u.Request.Msg(u.ID + suffix)
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		out[i] = m
	}
	return out, nil
}

// Producer publishes request events the way a fast producer does: with
// PublishMsgAsync and a bounded window of unacknowledged publishes.
type Producer struct {
	js     jetstream.JetStream
	failed atomic.Pointer[error]
}

// NewProducer returns a Producer on nc that keeps at most window publishes
// unacknowledged.
func NewProducer(nc *nats.Conn, window int) (*Producer, error) {
	p := &Producer{}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(window),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			err = fmt.Errorf("load: publish %s: %w", m.Subject, err)
			p.failed.CompareAndSwap(nil, &err)
		}))
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	p.js = js
	return p, nil
}

// JetStream is the producer's JetStream context.
func (p *Producer) JetStream() jetstream.JetStream { return p.js }

// Publish publishes msgs in order, writing into at[i] the time (UnixNano)
// just before msgs[i] went out, and returns once JetStream acknowledged all
// of them. rate is the publish rate per second; 0 publishes as fast as
// JetStream acknowledges, within the producer's window. It fails on the
// first publish JetStream refused.
func (p *Producer) Publish(ctx context.Context, msgs []*nats.Msg, at []int64, rate float64) error {
	start := time.Now()
	for i, m := range msgs {
		if rate > 0 {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return context.Cause(ctx)
				}
			}
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if at != nil {
			at[i] = time.Now().UnixNano()
		}
		if _, err := p.js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
			return fmt.Errorf("load: publish %s: %w", m.Subject, err)
		}
		if e := p.failed.Load(); e != nil {
			return *e
		}
	}
	select {
	case <-p.js.PublishAsyncComplete():
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	if e := p.failed.Load(); e != nil {
		return *e
	}
	return nil
}

// Completion is when the benchmark saw an upload's completed event, and
// the fingerprint the event carries.
type Completion struct {
	At     time.Time
	SHA256 string
}

// Tracker records the completed event and the dead letter of every upload
// from two core NATS subscriptions (uploads.completed.> and dlq.uploads.>),
// and lets a phase wait for a set of uploads, whose ids it need not know
// before their events arrive. Its callbacks only record: a map insert per
// event.
type Tracker struct {
	mu    sync.Mutex
	done  map[string]Completion
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

// Track subscribes to completed events and dead letters on nc. When it
// returns, the server knows both subscriptions.
func Track(nc *nats.Conn) (*Tracker, error) {
	t := &Tracker{done: map[string]Completion{}, dead: map[string]string{}, waits: map[string]*waiter{}}
	for subject, handle := range map[string]nats.MsgHandler{
		completedPrefix + ">": t.completed,
		deadLetters:           t.deadLetter,
	} {
		sub, err := nc.Subscribe(subject, handle)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("load: subscribe %s: %w", subject, err)
		}
		// A burst of completions must never be dropped as a slow consumer.
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			t.Close()
			return nil, fmt.Errorf("load: %w", err)
		}
		t.subs = append(t.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		t.Close()
		return nil, fmt.Errorf("load: %w", err)
	}
	return t, nil
}

// Close unsubscribes.
func (t *Tracker) Close() {
	for _, s := range t.subs {
		_ = s.Unsubscribe()
	}
	t.subs = nil
}

func (t *Tracker) completed(m *nats.Msg) {
	at := time.Now()
	id := strings.TrimPrefix(m.Subject, completedPrefix)
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, seen := t.done[id]; seen {
		return
	}
	t.done[id] = Completion{At: at, SHA256: m.Header.Get(events.HeaderPrefix + events.ExtSHA256)}
	if w := t.waits[id]; w != nil {
		delete(t.waits, id)
		if w.remaining--; w.remaining == 0 {
			w.finish(nil)
		}
	}
}

func (t *Tracker) deadLetter(m *nats.Msg) {
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

// Wait returns the completions of ids once all have completed. It fails
// when one is dead-lettered, when alive (checked every second; nil: never)
// reports an error, when none of them completed for stall (0: never), or
// when ctx ends. No other Wait may wait for one of ids at the same time.
func (t *Tracker) Wait(ctx context.Context, ids []string, alive func() error, stall time.Duration) (map[string]Completion, error) {
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

	remaining := func() int {
		t.mu.Lock()
		defer t.mu.Unlock()
		return w.remaining
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, lastAt := -1, time.Now()
	for {
		select {
		case <-w.ch:
			if w.err != nil {
				return nil, w.err
			}
			t.mu.Lock()
			defer t.mu.Unlock()
			out := make(map[string]Completion, len(ids))
			for _, id := range ids {
				out[id] = t.done[id]
			}
			return out, nil
		case <-tick.C:
			if n := remaining(); n != last {
				last, lastAt = n, time.Now()
			} else if stall > 0 && time.Since(lastAt) > stall {
				return nil, fmt.Errorf("stalled: no upload completed for %s, %d of %d did (see the services' logs)", stall, len(ids)-n, len(ids))
			}
			if alive != nil {
				if err := alive(); err != nil {
					return nil, err
				}
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("%d of %d uploads not completed: %w", remaining(), len(ids), context.Cause(ctx))
		}
	}
}

// forget removes what is left of w's registrations.
func (t *Tracker) forget(w *waiter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, x := range t.waits {
		if x == w {
			delete(t.waits, id)
		}
	}
}

// Result is what one measured publication of a set came to.
type Result struct {
	N int
	// Elapsed runs from the first publish to the last completed event.
	Elapsed time.Duration
	// Latency is publish → completed: p50, p99, max.
	Latency [3]time.Duration
}

// Rate is uploads completed per second, end to end.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.N) / r.Elapsed.Seconds()
}

// Summarize turns publish and completion times into a Result.
func Summarize(published, completed []int64) (Result, error) {
	if len(published) != len(completed) || len(published) == 0 {
		return Result{}, errors.New("load: no uploads, or not as many completions as publishes")
	}
	first, last := published[0], completed[0]
	lat := make([]time.Duration, len(published))
	for i := range published {
		if completed[i] == 0 {
			return Result{}, fmt.Errorf("load: upload %d did not complete", i)
		}
		first, last = min(first, published[i]), max(last, completed[i])
		lat[i] = time.Duration(completed[i] - published[i])
	}
	r := Result{N: len(published), Elapsed: time.Duration(last - first)}
	copy(r.Latency[:], stats.Percentiles(lat, 50, 99, 100))
	return r, nil
}

// Phase is one measured publication of a set: its rate and latencies, and
// the CPU each process used meanwhile.
type Phase struct {
	Result
	Usage procstat.Usage
}

// Per is the CPU time of process name per upload.
func (p Phase) Per(name string) procstat.Times { return p.Usage.Per(name, p.N) }

// Measure publishes the requests of set through producer (Nats-Msg-Id =
// upload id + suffix, at rate per second, 0 as fast as JetStream accepts)
// and waits on tracker until each has completed, reading meter before the
// first publish and after the last completion. alive is checked while it
// waits (nil: never); no upload completing for 30s fails it. settle, if
// set, runs between the last completion and the second reading, so that
// the work the uploads leave behind them counts (ingest's read model).
func Measure(ctx context.Context, producer *Producer, tracker *Tracker, meter *procstat.Meter, set *Set, suffix string, rate float64, alive func() error, settle func(context.Context) error) (Phase, error) {
	msgs, err := set.Msgs(suffix)
	if err != nil {
		return Phase{}, err
	}
	before, err := meter.Read()
	if err != nil {
		return Phase{}, err
	}
	published := make([]int64, len(msgs))
	if err := producer.Publish(ctx, msgs, published, rate); err != nil {
		return Phase{}, err
	}
	done, err := tracker.Wait(ctx, set.IDs(), alive, 30*time.Second)
	if err != nil {
		return Phase{}, err
	}
	if settle != nil {
		if err := settle(ctx); err != nil {
			return Phase{}, err
		}
	}
	after, err := meter.Read()
	if err != nil {
		return Phase{}, err
	}
	completed := make([]int64, len(msgs))
	for i, u := range set.Uploads {
		completed[i] = done[u.ID].At.UnixNano()
	}
	res, err := Summarize(published, completed)
	if err != nil {
		return Phase{}, err
	}
	return Phase{Result: res, Usage: after.Sub(before)}, nil
}

// Chain is what the pipeline makes of each upload of a set: the
// blob_stored event blobwriter emits (the object under uploads/<id>) and
// the completed event refwriter emits, as pkg/events builds them.
func (s *Set) Chain() (stored, completed []*events.Event, err error) {
	stored = make([]*events.Event, len(s.Uploads))
	completed = make([]*events.Event, len(s.Uploads))
	for i, u := range s.Uploads {
		req := u.Request
		b := events.Blob{Key: events.DefaultKeyPrefix + u.ID, Size: int64(len(u.Data)), SHA256: req.SHA256, ContentType: req.ContentType}
		if stored[i], err = events.NewBlobStored(req, b, events.SourceBlobWriter); err != nil {
			return nil, nil, fmt.Errorf("load: %w", err)
		}
		ref := events.Reference{ID: u.ID, Subject: req.Subject, Blob: b, EventTime: req.Time}
		if completed[i], err = events.NewCompleted(stored[i], ref, events.SourceRefWriter); err != nil {
			return nil, nil, fmt.Errorf("load: %w", err)
		}
	}
	return stored, completed, nil
}
