// Package marker stores per-step completion markers in Postgres: the record
// that one step of one upload finished, with the fingerprint it ran for and
// the result it produced.
//
// The protocol is check, then do, then record, never mark first:
//
//	claims, _ := store.ClaimMany(ctx, step, ids) // exclusive across replicas
//	defer claims.Release()
//	for each id claims.Held: if claims.Marker(id) exists, re-emit its result
//	results := doSideEffects()
//	stored, won, _ := claims.Record(ctx, markers, writesInSameTx)
//
// Record inserts with ON CONFLICT DO NOTHING; what it inserted says who won.
// Writes that must commit atomically with the markers (reference rows) run
// inside the same transaction. Every operation works on a batch of uploads
// in a constant number of round trips; Claim and Record on one upload are
// the batch of one.
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

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

const selectMarkers = `
	SELECT upload_id, fingerprint, result, created_at FROM step_markers
	WHERE step = $1 AND upload_id = ANY($2::text[])`

// Get returns the marker of step for id; ok is false when there is none.
func (s *Store) Get(ctx context.Context, id, step string) (m Marker, ok bool, err error) {
	found, err := s.GetMany(ctx, step, []string{id})
	m, ok = found[id]
	return m, ok, err
}

// GetMany returns the markers of step that exist for ids, by upload id, in
// one query.
func (s *Store) GetMany(ctx context.Context, step string, ids []string) (map[string]Marker, error) {
	found, err := getMany(ctx, s.pool, step, ids)
	if err != nil {
		return nil, fmt.Errorf("marker: get %d of step %s: %w", len(ids), step, err)
	}
	return found, nil
}

func getMany(ctx context.Context, q querier, step string, ids []string) (map[string]Marker, error) {
	found := make(map[string]Marker, len(ids))
	if len(ids) == 0 {
		return found, nil
	}
	rows, err := q.Query(ctx, selectMarkers, step, ids)
	if err != nil {
		return nil, err
	}
	m := Marker{Step: step}
	_, err = pgx.ForEachRow(rows, []any{&m.UploadID, &m.Fingerprint, &m.Result, &m.CreatedAt}, func() error {
		m.Result = append(json.RawMessage(nil), m.Result...)
		found[m.UploadID] = m
		return nil
	})
	return found, err
}

// lockKey is the advisory lock key of the claim on step $1 of upload id.
// Advisory locks are database-wide, so the key includes the schema
// (current_schema()): pipelines in other schemas of the same database, such
// as parallel tests, never block each other.
const lockKey = `hashtextextended(current_schema() || '/' || $1 || '/' || id, 0)`

// Claims is the exclusive right, across every process sharing the schema,
// to run one step of a set of uploads. It holds session advisory locks on
// one pooled connection until Release.
type Claims struct {
	conn    *pgxpool.Conn
	step    string
	held    map[string]bool
	markers map[string]Marker
}

// ClaimMany tries to take the claim on step for each of ids and reads, under
// the claims it got, the markers that exist. It never waits for a claim
// another worker holds: Held reports which ids it got. Two statements sent
// in one round trip: the markers are read after the locks are taken, so a
// marker recorded by the previous holder is always seen.
func (s *Store) ClaimMany(ctx context.Context, step string, ids []string) (*Claims, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("marker: claim %d of step %s: %w", len(ids), step, err)
	}
	c := &Claims{conn: conn, step: step, held: make(map[string]bool, len(ids))}
	ids = unique(ids) // a lock taken twice would need two unlocks
	var b pgx.Batch
	b.Queue(`SELECT id, pg_try_advisory_lock(`+lockKey+`) FROM unnest($2::text[]) AS t(id)`, step, ids)
	b.Queue(selectMarkers, step, ids)
	err = func() error {
		br := conn.SendBatch(ctx, &b)
		defer br.Close()
		rows, err := br.Query()
		if err != nil {
			return err
		}
		var (
			id     string
			locked bool
		)
		if _, err := pgx.ForEachRow(rows, []any{&id, &locked}, func() error {
			if locked {
				c.held[id] = true
			}
			return nil
		}); err != nil {
			return err
		}
		rows, err = br.Query()
		if err != nil {
			return err
		}
		c.markers = make(map[string]Marker)
		m := Marker{Step: step}
		_, err = pgx.ForEachRow(rows, []any{&m.UploadID, &m.Fingerprint, &m.Result, &m.CreatedAt}, func() error {
			if c.held[m.UploadID] {
				m.Result = append(json.RawMessage(nil), m.Result...)
				c.markers[m.UploadID] = m
			}
			return nil
		})
		return err
	}()
	if err != nil {
		// Some locks may be held: never hand this connection back.
		c.discard()
		return nil, fmt.Errorf("marker: claim %d of step %s: %w", len(ids), step, err)
	}
	return c, nil
}

// Held reports whether this claim holds upload id.
func (c *Claims) Held(id string) bool { return c.held[id] }

// Marker returns the marker of a held upload, read when the claim was taken.
func (c *Claims) Marker(id string) (Marker, bool) {
	m, ok := c.markers[id]
	return m, ok
}

// Record inserts the markers ms, skipping those whose (UploadID, Step)
// exists, in one transaction on the claim's connection. inTx (if not nil)
// runs in the same transaction with the indexes into ms this call inserted,
// and everything commits together or not at all. Record returns, for each of
// ms, the marker now stored and whether this call inserted it.
func (c *Claims) Record(ctx context.Context, ms []Marker, inTx func(ctx context.Context, tx pgx.Tx, won []int) error) ([]Marker, []bool, error) {
	return record(ctx, c.conn, ms, inTx)
}

// Release gives up the claims. It is safe to call more than once.
func (c *Claims) Release() {
	if c.conn == nil {
		return
	}
	ids := make([]string, 0, len(c.held))
	for id := range c.held {
		ids = append(ids, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if len(ids) > 0 {
		if _, err := c.conn.Exec(ctx, `SELECT pg_advisory_unlock(`+lockKey+`) FROM unnest($2::text[]) AS t(id)`, c.step, ids); err != nil {
			c.discard()
			return
		}
	}
	c.conn.Release()
	c.conn = nil
}

// discard closes the connection so that the locks it may hold die with it.
func (c *Claims) discard() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.conn.Conn().Close(ctx)
	c.conn.Release()
	c.conn = nil
}

// Claim is the claim on one step of one upload: a batch of one.
type Claim struct {
	claims *Claims
	id     string
}

// Claim takes the claim on (id, step) and reads its marker under it. It
// returns ErrBusy at once when another worker holds the claim.
func (s *Store) Claim(ctx context.Context, id, step string) (*Claim, error) {
	cs, err := s.ClaimMany(ctx, step, []string{id})
	if err != nil {
		return nil, err
	}
	if !cs.Held(id) {
		cs.Release()
		return nil, ErrBusy
	}
	return &Claim{claims: cs, id: id}, nil
}

// Marker returns the marker read when the claim was taken.
func (c *Claim) Marker() (Marker, bool) { return c.claims.Marker(c.id) }

// Record inserts m unless a marker for its (UploadID, Step) exists. When it
// inserts, inTx (if not nil) runs in the same transaction, and both commit
// together. It returns the marker now stored, and won = true when it was this
// call's. When another writer won, inTx does not run and nothing is written.
func (c *Claim) Record(ctx context.Context, m Marker, inTx func(context.Context, pgx.Tx) error) (Marker, bool, error) {
	return recordOne(ctx, c.claims.conn, m, inTx)
}

// Release gives up the claim. It is safe to call more than once.
func (c *Claim) Release() { c.claims.Release() }

// Record is Claim.Record without a claim, for callers that rely on the
// marker's primary key alone.
func (s *Store) Record(ctx context.Context, m Marker, inTx func(context.Context, pgx.Tx) error) (Marker, bool, error) {
	return recordOne(ctx, s.pool, m, inTx)
}

type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

func recordOne(ctx context.Context, db beginner, m Marker, inTx func(context.Context, pgx.Tx) error) (Marker, bool, error) {
	var batchTx func(context.Context, pgx.Tx, []int) error
	if inTx != nil {
		batchTx = func(ctx context.Context, tx pgx.Tx, won []int) error {
			if len(won) == 0 {
				return nil
			}
			return inTx(ctx, tx)
		}
	}
	stored, won, err := record(ctx, db, []Marker{m}, batchTx)
	if err != nil {
		return Marker{}, false, err
	}
	return stored[0], won[0], nil
}

func record(ctx context.Context, db beginner, ms []Marker, inTx func(context.Context, pgx.Tx, []int) error) ([]Marker, []bool, error) {
	stored, won := make([]Marker, len(ms)), make([]bool, len(ms))
	if len(ms) == 0 {
		return stored, won, nil
	}
	what := fmt.Sprintf("%s/%s", ms[0].UploadID, ms[0].Step)
	if len(ms) > 1 {
		what = fmt.Sprintf("%d markers", len(ms))
	}
	ids, steps, fps, results := make([]string, len(ms)), make([]string, len(ms)), make([]string, len(ms)), make([]string, len(ms))
	index := make(map[[2]string]int, len(ms))
	for i, m := range ms {
		if len(m.Result) == 0 {
			m.Result = json.RawMessage("null")
		}
		stored[i] = m
		ids[i], steps[i], fps[i], results[i] = m.UploadID, m.Step, m.Fingerprint, string(m.Result)
		index[[2]string{m.UploadID, m.Step}] = i
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("marker: record %s: %w", what, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	// Sorted inserts take the primary key's locks in one order everywhere.
	rows, err := tx.Query(ctx, `
		INSERT INTO step_markers (upload_id, step, fingerprint, result)
		SELECT id, step, fp, result::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(id, step, fp, result)
		ORDER BY id, step
		ON CONFLICT (upload_id, step) DO NOTHING
		RETURNING upload_id, step, created_at`, ids, steps, fps, results)
	if err != nil {
		return nil, nil, fmt.Errorf("marker: record %s: %w", what, err)
	}
	var (
		id, step string
		created  time.Time
		wonIdx   []int
	)
	if _, err := pgx.ForEachRow(rows, []any{&id, &step, &created}, func() error {
		i := index[[2]string{id, step}]
		stored[i].CreatedAt, won[i] = created, true
		wonIdx = append(wonIdx, i)
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("marker: record %s: %w", what, err)
	}
	if len(wonIdx) < len(ms) {
		// Other writers won these; report what they recorded.
		if err := readLosers(ctx, tx, stored, won); err != nil {
			return nil, nil, fmt.Errorf("marker: record %s: %w", what, err)
		}
	}
	if inTx != nil {
		if err := inTx(ctx, tx, wonIdx); err != nil {
			return nil, nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, nil, fmt.Errorf("marker: record %s: commit: %w", what, err)
	}
	return stored, won, nil
}

// readLosers replaces the markers this call did not insert by the stored ones.
func readLosers(ctx context.Context, q querier, stored []Marker, won []bool) error {
	byStep := map[string][]string{}
	for i, m := range stored {
		if !won[i] {
			byStep[m.Step] = append(byStep[m.Step], m.UploadID)
		}
	}
	for step, ids := range byStep {
		found, err := getMany(ctx, q, step, ids)
		if err != nil {
			return err
		}
		for i, m := range stored {
			if won[i] || m.Step != step {
				continue
			}
			existing, ok := found[m.UploadID]
			if !ok {
				return fmt.Errorf("conflicting marker %s/%s vanished", m.UploadID, step)
			}
			stored[i] = existing
		}
	}
	return nil
}

func unique(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
