package ingestbench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"
	"github.com/blobref/blobref/bench/internal/stats"
)

// Level is one HTTP phase: N uploads sent by Clients clients at once, each
// client sending its next upload once the last was answered.
type Level struct {
	Clients, N int
	// Elapsed runs from the first request to the last answer that ended an
	// upload: 200/201 on the HTTP path, 202 for accept only.
	Elapsed time.Duration
	// Latency runs from the first request of an upload to the answer that
	// ended it: p50, p99 and max.
	Latency [3]time.Duration
	// Requests is how many requests the uploads took: N plus the retries.
	Requests int
	// Completed (accept only) runs from the first request to the last
	// uploads.completed event.
	Completed time.Duration
	// Usage is the CPU each process used over the phase (accept only: until
	// the last completion).
	Usage procstat.Usage
	// Peak is each program's peak RSS during the phase, by name.
	Peak map[string]int64
	// WAL is the bytes of write-ahead log Postgres wrote over the phase.
	WAL int64
	// Checked is what the check after the phase looked at.
	Checked pipeline.Checked
	// Stages (the HTTP path) split its uploads' time at their events.
	Stages Stages
	// Batches is each service's mean batch over the phase, by name (none
	// for a service that ran no batch, or serves no histogram of them).
	Batches map[string]float64
}

// Rate is uploads ended per second: referenced on the HTTP path, accepted
// for accept only.
func (l Level) Rate() float64 { return float64(l.N) / l.Elapsed.Seconds() }

// CompletedRate (accept only) is uploads completed per second, end to end.
func (l Level) CompletedRate() float64 { return float64(l.N) / l.Completed.Seconds() }

// Retries is the requests beyond the first, per upload.
func (l Level) Retries() float64 { return float64(l.Requests-l.N) / float64(l.N) }

// WALPer is the bytes of write-ahead log per upload.
func (l Level) WALPer() float64 { return float64(l.WAL) / float64(l.N) }

// Per is the CPU time of process name per upload.
func (l Level) Per(name string) procstat.Times { return l.Usage.Per(name, l.N) }

// upload is one upload of an HTTP phase.
type upload struct {
	key  string
	body []byte
	sha  string
}

// makeUploads builds n uploads of size bytes with Idempotency-Keys prefix +
// index: a random block with the key written over its start, so that no
// two share a fingerprint. They are made before a phase is measured.
func makeUploads(prefix string, n, size int) []upload {
	block := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{byte(n), byte(size)}).Read(block) // #nosec G115 -- only seeds test data: truncation is fine
	out := make([]upload, n)
	for i := range out {
		key := fmt.Sprintf("%s%07d", prefix, i)
		body := bytes.Clone(block)
		copy(body, key)
		sum := sha256.Sum256(body)
		out[i] = upload{key: key, body: body, sha: hex.EncodeToString(sum[:])}
	}
	return out
}

// sent is what one upload of a phase recorded.
type sent struct {
	id          string
	start, done time.Time
	requests    int
}

// drive sends uploads from clients goroutines, each taking the next upload
// once send returned for its last one, and returns what each recorded.
func drive(ctx context.Context, ups []upload, clients int, send func(context.Context, upload) (id string, requests int, err error)) ([]sent, error) {
	out := make([]sent, len(ups))
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range clients {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ups) {
					return nil
				}
				start := time.Now()
				id, requests, err := send(gctx, ups[i])
				if err != nil {
					return err
				}
				out[i] = sent{id: id, start: start, done: time.Now(), requests: requests}
			}
		})
	}
	return out, g.Wait()
}

// measurePhase reads p's meter and resets its peaks around f and what
// ingest's read model is left to fold in once f returned, and fills in a
// Level from what f sent.
func measurePhase(p *pipeline.Pipeline, clients int, f func() ([]sent, error)) (Level, []sent, error) {
	if err := resetPeaks(p); err != nil {
		return Level{}, nil, err
	}
	meter := p.Meter()
	walBefore, err := p.WAL(context.Background())
	if err != nil {
		return Level{}, nil, err
	}
	batchesBefore, err := readBatches(context.Background(), p)
	if err != nil {
		return Level{}, nil, err
	}
	before, err := meter.Read()
	if err != nil {
		return Level{}, nil, err
	}
	recs, err := f()
	if err != nil {
		return Level{}, nil, err
	}
	if err := settle(p)(context.Background()); err != nil {
		return Level{}, nil, err
	}
	after, err := meter.Read()
	if err != nil {
		return Level{}, nil, err
	}
	batchesAfter, err := readBatches(context.Background(), p)
	if err != nil {
		return Level{}, nil, err
	}
	walAfter, err := p.WAL(context.Background())
	if err != nil {
		return Level{}, nil, err
	}
	l := Level{Clients: clients, N: len(recs), Usage: after.Sub(before), WAL: walAfter - walBefore,
		Batches: meanBatches(batchesBefore, batchesAfter)}
	if l.Peak, err = peaks(p); err != nil {
		return Level{}, nil, err
	}
	lat := make([]time.Duration, len(recs))
	first, last := recs[0].start, recs[0].done
	for i, r := range recs {
		lat[i] = r.done.Sub(r.start)
		l.Requests += r.requests
		first, last = minTime(first, r.start), maxTime(last, r.done)
	}
	l.Elapsed = last.Sub(first)
	copy(l.Latency[:], stats.Percentiles(lat, 50, 99, 100))
	return l, recs, nil
}

// referencedPhase sends n uploads from clients clients that each want the
// reference (Prefer: wait, retried until 200/201), then checks check of
// them whole.
func (b *bench) referencedPhase(ctx context.Context, p *pipeline.Pipeline, cl *client, label string, n, clients, check int) (Level, error) {
	ups := makeUploads(b.keys(label), n, b.cfg.UploadSize)
	l, recs, err := measurePhase(p, clients, func() ([]sent, error) {
		return drive(ctx, ups, clients, func(ctx context.Context, u upload) (string, int, error) {
			return cl.referenced(ctx, u.key, u.body, u.sha, b.cfg.Wait, b.cfg.RequestTimeout)
		})
	})
	if err != nil {
		return Level{}, err
	}
	if l.Checked, err = p.Check(ctx, sample(ups, recs, check)); err != nil {
		return Level{}, err
	}
	l.Stages, err = stagesOf(ctx, p.NATSURL, load.PipelineEvents, recs)
	return l, err
}

// acceptPhase sends n uploads from clients clients that stop at 202, waits
// until each has completed (uploads.completed), then checks a sample of
// them whole.
func (b *bench) acceptPhase(ctx context.Context, p *pipeline.Pipeline, cl *client, n, clients int) (Level, error) {
	nc, err := nats.Connect(p.NATSURL, nats.Name("bench-tracker"))
	if err != nil {
		return Level{}, fmt.Errorf("ingestbench: %w", err)
	}
	defer nc.Close()
	tracker, err := load.Track(nc)
	if err != nil {
		return Level{}, err
	}
	defer tracker.Close()
	ups := makeUploads(b.keys("accept"), n, b.cfg.UploadSize)
	var lastCompleted time.Time
	l, recs, err := measurePhase(p, clients, func() ([]sent, error) {
		recs, err := drive(ctx, ups, clients, func(ctx context.Context, u upload) (string, int, error) {
			return cl.accepted(ctx, u.key, u.body, b.cfg.RequestTimeout)
		})
		if err != nil {
			return nil, err
		}
		ids := make([]string, len(recs))
		for i, r := range recs {
			ids[i] = r.id
		}
		done, err := tracker.Wait(ctx, ids, p.Alive, 30*time.Second)
		if err != nil {
			return nil, err
		}
		for i, id := range ids {
			if c := done[id]; c.SHA256 != ups[i].sha {
				return nil, fmt.Errorf("upload %s completed with sha256 %s, want %s (the bytes sent)", ups[i].key, c.SHA256, ups[i].sha)
			}
			lastCompleted = maxTime(lastCompleted, done[id].At)
		}
		return recs, nil
	})
	if err != nil {
		return Level{}, err
	}
	first := recs[0].start
	for _, r := range recs {
		first = minTime(first, r.start)
	}
	l.Completed = lastCompleted.Sub(first)
	l.Checked, err = p.Check(ctx, sample(ups, recs, b.cfg.Check))
	return l, err
}

// sample is n of the uploads spread evenly over them (all when n is
// larger), as the pipeline should have made them.
func sample(ups []upload, recs []sent, n int) []pipeline.Expected {
	n = min(n, len(ups))
	out := make([]pipeline.Expected, 0, n)
	for k := range n {
		i := k * len(ups) / n
		out = append(out, pipeline.Expected{
			ID: recs[i].id, Subject: subjectOf(ups[i].key), ContentType: contentType,
			Size: int64(len(ups[i].body)), SHA256: ups[i].sha,
		})
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
