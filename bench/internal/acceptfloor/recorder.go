package acceptfloor

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// maxBatch caps the rows of one INSERT.
const maxBatch = 1024

// insertTimeout bounds one batch's round trip; it runs on a context the
// shutdown does not cancel.
const insertTimeout = 30 * time.Second

// Recorder records uploads with group commit: one goroutine takes whatever
// requests are waiting, inserts them with one statement (one round trip,
// one commit), answers each, and takes the next batch. While a batch is in
// Postgres the next one gathers.
type Recorder struct {
	pool  *pgxpool.Pool
	queue chan *pending
	// batches counts the INSERTs run.
	batches atomic.Int64
}

// pending is one upload waiting for its batch.
type pending struct {
	id   string
	body []byte
	done chan error
}

// NewRecorder returns a recorder inserting into Table over pool. Run it
// with Run.
func NewRecorder(pool *pgxpool.Pool) *Recorder {
	return &Recorder{pool: pool, queue: make(chan *pending, maxBatch)}
}

// Record waits until (id, body) is committed with its batch, or ctx ends.
func (r *Recorder) Record(ctx context.Context, id string, body []byte) error {
	p := &pending{id: id, body: body, done: make(chan error, 1)}
	select {
	case r.queue <- p:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Batches is how many INSERTs the recorder has run.
func (r *Recorder) Batches() int64 { return r.batches.Load() }

// Run inserts batches until ctx ends.
func (r *Recorder) Run(ctx context.Context) error {
	batch := make([]*pending, 0, maxBatch)
	ids := make([]string, 0, maxBatch)
	bodies := make([][]byte, 0, maxBatch)
	for {
		select {
		case p := <-r.queue:
			batch = append(batch[:0], p)
		case <-ctx.Done():
			return nil
		}
	gather:
		for len(batch) < maxBatch {
			select {
			case p := <-r.queue:
				batch = append(batch, p)
			default:
				break gather
			}
		}
		ids, bodies = ids[:0], bodies[:0]
		for _, p := range batch {
			ids, bodies = append(ids, p.id), append(bodies, p.body)
		}
		err := r.insert(ctx, ids, bodies)
		for _, p := range batch {
			p.done <- err
		}
		clear(batch) // drop the bodies
	}
}

func (r *Recorder) insert(ctx context.Context, ids []string, bodies [][]byte) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), insertTimeout)
	defer cancel()
	r.batches.Add(1)
	if _, err := r.pool.Exec(ctx, `INSERT INTO `+Table+` (id, body) SELECT * FROM unnest($1::text[], $2::bytea[])`, ids, bodies); err != nil {
		return fmt.Errorf("acceptfloor: record %d uploads: %w", len(ids), err)
	}
	return nil
}
