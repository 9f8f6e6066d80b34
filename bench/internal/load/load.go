// Package load is the benchmark's side of the pipeline's traffic: it builds
// request events the way a producer does (pkg/events), publishes them to
// JetStream as fast as it accepts them or at a set rate, remembering when
// each was published, and records when each upload's completed event
// arrives.
package load

import (
	"context"
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
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
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

// Tracker records when each upload of a set completed, from a core NATS
// subscription to uploads.completed.>, and the first dead letter of the
// set (from dlq.uploads.>). Its callbacks only record.
type Tracker struct {
	set  *Set
	at   []int64 // UnixNano of the first completed event of upload i
	done chan struct{}
	subs []*nats.Subscription

	mu    sync.Mutex
	count int
	dead  error
}

// Track subscribes to completed events and dead letters on nc. When it
// returns, the server knows both subscriptions.
func Track(nc *nats.Conn, set *Set) (*Tracker, error) {
	t := &Tracker{set: set, at: make([]int64, len(set.Uploads)), done: make(chan struct{})}
	if len(set.Uploads) == 0 {
		close(t.done)
	}
	for subject, handle := range map[string]nats.MsgHandler{
		"uploads.completed.>": t.completed,
		"dlq.uploads.>":       t.deadLetter,
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
	now := time.Now().UnixNano()
	i := t.set.Index(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
	if i < 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.at[i] != 0 {
		return
	}
	t.at[i] = now
	if t.count++; t.count == len(t.at) {
		close(t.done)
	}
}

func (t *Tracker) deadLetter(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	if t.set.Index(id) < 0 {
		return
	}
	why := "a dead letter without Blobref-Dead headers"
	if d, err := events.ParseDeadLetter(m.Header); err == nil {
		why = fmt.Sprintf("%s at step %s: %s", d.Reason, d.Step, d.Error)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead == nil {
		t.dead = fmt.Errorf("upload %s was dead-lettered: %s", id, why)
	}
}

// Count is the number of uploads completed so far.
func (t *Tracker) Count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.count
}

// Wait returns once every upload of the set completed. It fails on a dead
// letter of the set, when alive (checked every second; nil: never) reports
// an error, when no upload completed for stall (0: never), or when ctx
// ends.
func (t *Tracker) Wait(ctx context.Context, alive func() error, stall time.Duration) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, lastAt := -1, time.Now()
	for {
		select {
		case <-t.done:
			return nil
		case <-tick.C:
			t.mu.Lock()
			dead := t.dead
			t.mu.Unlock()
			if dead != nil {
				return dead
			}
			if n := t.Count(); n != last {
				last, lastAt = n, time.Now()
			} else if stall > 0 && time.Since(lastAt) > stall {
				return fmt.Errorf("stalled: no upload completed for %s, %d of %d did (see the services' logs)", stall, n, len(t.at))
			}
			if alive != nil {
				if err := alive(); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return fmt.Errorf("%d of %d uploads not completed: %w", len(t.at)-t.Count(), len(t.at), context.Cause(ctx))
		}
	}
}

// Times returns when each upload completed (UnixNano; 0: not yet).
func (t *Tracker) Times() []int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]int64(nil), t.at...)
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

// Chain is what the pipeline makes of each upload of a set: the
// blob_stored event blobwriter emits (the object under uploads/<id>) and
// the completed event refwriter emits, as pkg/events builds them.
func (s *Set) Chain() (stored, completed []*events.Event, err error) {
	stored = make([]*events.Event, len(s.Uploads))
	completed = make([]*events.Event, len(s.Uploads))
	for i, u := range s.Uploads {
		req := u.Request
		b := events.Blob{Key: "uploads/" + u.ID, Size: int64(len(u.Data)), SHA256: req.SHA256, ContentType: req.ContentType}
		if stored[i], err = events.NewBlobStored(req, b, "/blobref/blobwriter"); err != nil {
			return nil, nil, fmt.Errorf("load: %w", err)
		}
		ref := events.Reference{ID: u.ID, Subject: req.Subject, Blob: b, EventTime: req.Time}
		if completed[i], err = events.NewCompleted(stored[i], ref, "/blobref/refwriter"); err != nil {
			return nil, nil, fmt.Errorf("load: %w", err)
		}
	}
	return stored, completed, nil
}
