// Package marker stores per-step completion markers in Postgres: the record
// that one step of one upload finished, with the fingerprint it ran for and
// the result it produced.
//
// The protocol is check, then do, then record, never mark first:
//
//	claim, _ := store.Claim(ctx, id, step) // exclusive across replicas
//	defer claim.Release()
//	if m, ok := claim.Marker(); ok { /* done before: re-emit m.Result */ }
//	result := doSideEffect()
//	m, won, _ := claim.Record(ctx, Marker{...}, writesInSameTx)
//
// Record inserts with ON CONFLICT DO NOTHING; its rows-affected says who
// won. Writes that must commit atomically with the marker (a reference row)
// run inside the same transaction.
package marker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrBusy is returned by Claim when another process holds the claim.
var ErrBusy = errors.New("marker: step is being run by another worker")

// Marker records that Step finished for UploadID.
type Marker struct {
	UploadID    string
	Step        string
	Fingerprint string          // the upload's sha256
	Result      json.RawMessage // the step's result, re-emitted on a repeat
	CreatedAt   time.Time
}

// Store reads and writes markers in the step_markers table.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store over pool. The schema must be migrated.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

const selectMarker = `SELECT fingerprint, result, created_at FROM step_markers WHERE upload_id = $1 AND step = $2`

// Get returns the marker of step for id; ok is false when there is none.
func (s *Store) Get(ctx context.Context, id, step string) (m Marker, ok bool, err error) {
	return get(ctx, s.pool, id, step)
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func get(ctx context.Context, q querier, id, step string) (Marker, bool, error) {
	m := Marker{UploadID: id, Step: step}
	err := q.QueryRow(ctx, selectMarker, id, step).Scan(&m.Fingerprint, &m.Result, &m.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Marker{}, false, nil
	}
	if err != nil {
		return Marker{}, false, fmt.Errorf("marker: get %s/%s: %w", id, step, err)
	}
	return m, true, nil
}

// Claim is the exclusive right, across every process sharing the schema, to
// run one step of one upload. It holds a session advisory lock on a pooled
// connection until Release. Advisory locks are database-wide, so the lock's
// key includes the schema (current_schema()): pipelines in other schemas of
// the same database, such as parallel tests, never block each other.
type Claim struct {
	conn   *pgxpool.Conn
	lockID string
	marker Marker
	found  bool
}

// lockKey is the advisory lock key of a claim whose lockID is $1.
const lockKey = `hashtextextended(current_schema() || '/' || $1, 0)`

// Claim takes the claim on (id, step) and reads its marker under it. It
// returns ErrBusy at once when another worker holds the claim.
func (s *Store) Claim(ctx context.Context, id, step string) (*Claim, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("marker: claim %s/%s: %w", id, step, err)
	}
	c := &Claim{conn: conn, lockID: step + "/" + id, marker: Marker{UploadID: id, Step: step}}
	var (
		locked      bool
		fingerprint *string
		created     *time.Time
	)
	err = conn.QueryRow(ctx, `
		SELECT l.locked, m.fingerprint, m.result, m.created_at
		FROM (SELECT pg_try_advisory_lock(`+lockKey+`) AS locked) l
		LEFT JOIN step_markers m ON l.locked AND m.upload_id = $2 AND m.step = $3`,
		c.lockID, id, step).Scan(&locked, &fingerprint, &c.marker.Result, &created)
	if err != nil {
		// The lock may or may not be held: never hand this connection back.
		c.discard()
		return nil, fmt.Errorf("marker: claim %s/%s: %w", id, step, err)
	}
	if !locked {
		conn.Release()
		return nil, ErrBusy
	}
	if fingerprint != nil && created != nil {
		c.marker.Fingerprint, c.marker.CreatedAt, c.found = *fingerprint, *created, true
	}
	return c, nil
}

// Marker returns the marker read when the claim was taken.
func (c *Claim) Marker() (Marker, bool) { return c.marker, c.found }

// Record inserts m unless a marker for its (UploadID, Step) exists. When it
// inserts, inTx (if not nil) runs in the same transaction, and both commit
// together. It returns the marker now stored, and won = true when it was this
// call's. When another writer won, inTx does not run and nothing is written.
func (c *Claim) Record(ctx context.Context, m Marker, inTx func(context.Context, pgx.Tx) error) (Marker, bool, error) {
	return record(ctx, c.conn, m, inTx)
}

// Release gives up the claim. It is safe to call more than once.
func (c *Claim) Release() {
	if c.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.conn.Exec(ctx, `SELECT pg_advisory_unlock(`+lockKey+`)`, c.lockID); err != nil {
		c.discard()
		return
	}
	c.conn.Release()
	c.conn = nil
}

// discard closes the connection so that a lock it may hold dies with it.
func (c *Claim) discard() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.conn.Conn().Close(ctx)
	c.conn.Release()
	c.conn = nil
}

// Record is Claim.Record without a claim, for callers that rely on the
// marker's primary key alone.
func (s *Store) Record(ctx context.Context, m Marker, inTx func(context.Context, pgx.Tx) error) (Marker, bool, error) {
	return record(ctx, s.pool, m, inTx)
}

type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

func record(ctx context.Context, db beginner, m Marker, inTx func(context.Context, pgx.Tx) error) (Marker, bool, error) {
	if len(m.Result) == 0 {
		m.Result = json.RawMessage("null")
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return Marker{}, false, fmt.Errorf("marker: record %s/%s: %w", m.UploadID, m.Step, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	err = tx.QueryRow(ctx, `
		INSERT INTO step_markers (upload_id, step, fingerprint, result)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (upload_id, step) DO NOTHING
		RETURNING created_at`,
		m.UploadID, m.Step, m.Fingerprint, m.Result).Scan(&m.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		// Another writer won; report what it recorded.
		existing, ok, err := get(ctx, tx, m.UploadID, m.Step)
		if err != nil {
			return Marker{}, false, err
		}
		if !ok {
			return Marker{}, false, fmt.Errorf("marker: record %s/%s: conflicting marker vanished", m.UploadID, m.Step)
		}
		return existing, false, nil
	}
	if err != nil {
		return Marker{}, false, fmt.Errorf("marker: record %s/%s: %w", m.UploadID, m.Step, err)
	}
	if inTx != nil {
		if err := inTx(ctx, tx); err != nil {
			return Marker{}, false, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return Marker{}, false, fmt.Errorf("marker: record %s/%s: commit: %w", m.UploadID, m.Step, err)
	}
	return m, true, nil
}
