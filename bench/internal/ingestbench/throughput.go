package ingestbench

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blobref/blobref/bench/internal/stats"
)

// ThroughputRun is one run of the throughput phase: Uploads uploads sent by
// Concurrency clients as fast as ingest answers, followed to completion.
type ThroughputRun struct {
	Uploads int
	// Elapsed runs from the first request to the last completed event.
	Elapsed time.Duration
	// AcceptElapsed runs from the first request to the last 202 answer.
	AcceptElapsed time.Duration
	// Accept is the latency of the answer (request sent → 202 received):
	// p50, p99 and max.
	Accept [3]time.Duration
	// Complete is the latency of completion (request sent → completed event
	// received): p50, p99 and max.
	Complete [3]time.Duration
	// Peak is each program's peak RSS during the run, by name.
	Peak map[string]int64
}

// Rate is the end-to-end rate: uploads completed per second.
func (r ThroughputRun) Rate() float64 { return float64(r.Uploads) / r.Elapsed.Seconds() }

// AcceptRate is HTTP uploads accepted per second.
func (r ThroughputRun) AcceptRate() float64 { return float64(r.Uploads) / r.AcceptElapsed.Seconds() }

// sent is what one request of a run recorded.
type sent struct {
	id              string
	start, accepted time.Time
}

// throughput runs the throughput phase once: run numbers the run, so that
// its Idempotency-Keys are its own.
func (b *bench) throughput(ctx context.Context, run int) (ThroughputRun, error) {
	n, size := b.cfg.Uploads, b.cfg.UploadSize
	// Bodies are a random block with the key written over its start: no
	// two uploads share a fingerprint, and making one costs a copy.
	block := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{byte(run)})
	_, _ = rng.Read(block)

	if err := b.resetPeaks(); err != nil {
		return ThroughputRun{}, err
	}
	records := make([]sent, n)
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	first := time.Now()
	for range b.cfg.Concurrency {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return nil
				}
				key := fmt.Sprintf("%sr%d-%07d", b.keyPrefix, run, i)
				body := bytes.Clone(block)
				copy(body, key)
				start := time.Now()
				rctx, cancel := context.WithTimeoutCause(gctx, b.cfg.RequestTimeout,
					fmt.Errorf("no answer within %s", b.cfg.RequestTimeout))
				id, err := b.client.post(rctx, key, bytes.NewReader(body), int64(size))
				cancel()
				if err != nil {
					return err
				}
				records[i] = sent{id: id, start: start, accepted: time.Now()}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return ThroughputRun{}, err
	}

	ids := make([]string, n)
	for i, r := range records {
		ids[i] = r.id
	}
	done, err := b.tracker.wait(ctx, ids, b.pipe.Alive)
	if err != nil {
		return ThroughputRun{}, err
	}

	res := ThroughputRun{Uploads: n}
	accept := make([]time.Duration, n)
	complete := make([]time.Duration, n)
	var lastAccepted, lastCompleted time.Time
	for i, r := range records {
		c := done[r.id]
		accept[i], complete[i] = r.accepted.Sub(r.start), c.At.Sub(r.start)
		if r.accepted.After(lastAccepted) {
			lastAccepted = r.accepted
		}
		if c.At.After(lastCompleted) {
			lastCompleted = c.At
		}
	}
	res.Elapsed, res.AcceptElapsed = lastCompleted.Sub(first), lastAccepted.Sub(first)
	copy(res.Accept[:], stats.Percentiles(accept, 50, 99, 100))
	copy(res.Complete[:], stats.Percentiles(complete, 50, 99, 100))
	if res.Peak, err = b.peaks(); err != nil {
		return ThroughputRun{}, err
	}
	return res, nil
}
