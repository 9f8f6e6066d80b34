package marker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blobref/blobref/pkg/step/internal/pglock"
)

// Claims is the exclusive right, across every process sharing the schema,
// to run one step of a set of uploads: session advisory locks (package
// pglock) in the step's namespace, held on one pooled connection until the
// markers are recorded or Release.
type Claims struct {
	store   *Store
	locks   *pglock.Set
	step    string
	markers map[string]Marker
	excused map[Delivery]int
}

// claimSQL takes the claim on each id whose step has no marker yet, and
// returns the marker of each that has one: a finished step needs no claim.
// CASE, unlike AND, guarantees the lock is only tried when no marker was
// seen. Each id's marker is looked up on its own (LATERAL ... LIMIT 1 is
// never turned into a join of the whole table): with a plain join, a plan
// made while the table was small (a new deployment's first hours) hashes
// every marker of the step on each claim, until the next ANALYZE.
var claimSQL = `
	SELECT t.id, m.fingerprint, m.result, m.created_at,
		CASE WHEN m.upload_id IS NULL THEN ` + pglock.TryLockSQL("$1", "t.id") + ` ELSE false END
	FROM unnest($2::text[]) AS t(id)
	LEFT JOIN LATERAL (
		SELECT upload_id, fingerprint, result, created_at FROM step_markers
		WHERE step = $1 AND upload_id = t.id LIMIT 1
	) m ON true`

// ClaimMany looks up the markers of step for ids and takes the claim on
// each id that has none, in one round trip. Marker reports the markers of
// the finished ids, which need no claim; Held reports the claims it got. It
// never waits for a claim another worker holds. The claims' markers are
// read again after the locks are taken (a second statement of the same
// round trip), so a marker recorded by the previous holder of a claim is
// always seen.
func (s *Store) ClaimMany(ctx context.Context, step string, ids []string) (*Claims, error) {
	return s.ClaimAndCount(ctx, step, ids, nil)
}

// ClaimAndCount is ClaimMany that also reads, in the same round trip, the
// excused deliveries of ds (see Excused), for Claims.Excused. It reads them
// on the claims' connection: a caller that holds claims never needs a
// second connection to decide whether a message used up its deliveries.
func (s *Store) ClaimAndCount(ctx context.Context, step string, ids []string, ds []Delivery) (*Claims, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("marker: claim %d of step %s: %w", len(ids), step, err)
	}
	ids = unique(ids) // a lock taken twice would need two unlocks
	c := &Claims{store: s, locks: pglock.NewSet(conn, step, len(ids)), step: step, markers: make(map[string]Marker)}
	var b pgx.Batch
	b.Queue(claimSQL, step, ids)
	b.Queue(selectMarkers, step, ids)
	if len(ds) > 0 {
		streams, seqs := deliveryArgs(ds)
		b.Queue(selectExcused, step, streams, seqs)
	}
	err = func() error {
		br := conn.SendBatch(ctx, &b)
		defer br.Close()
		rows, err := br.Query()
		if err != nil {
			return err
		}
		var (
			id      string
			fp      *string
			result  []byte
			created *time.Time
			locked  bool
		)
		if _, err := pgx.ForEachRow(rows, []any{&id, &fp, &result, &created, &locked}, func() error {
			switch {
			case locked:
				c.locks.Add(id)
			case fp != nil:
				c.markers[id] = Marker{UploadID: id, Step: step, Fingerprint: *fp, Result: result, CreatedAt: *created}
			}
			return nil
		}); err != nil {
			return err
		}
		rows, err = br.Query()
		if err != nil {
			return err
		}
		m := Marker{Step: step}
		if _, err := pgx.ForEachRow(rows, m.targets(&result), func() error {
			if c.locks.Held(m.UploadID) {
				m.Result = result
				c.markers[m.UploadID] = m
			}
			return nil
		}); err != nil {
			return err
		}
		if len(ds) > 0 {
			if rows, err = br.Query(); err != nil {
				return err
			}
			if c.excused, err = scanExcused(rows, len(ds)); err != nil {
				return err
			}
		}
		return br.Close()
	}()
	if err != nil {
		// Some locks may be held: never hand this connection back.
		c.locks.Discard()
		return nil, fmt.Errorf("marker: claim %d of step %s: %w", len(ids), step, err)
	}
	c.locks.Forget(nil) // with no claim held, nothing is recorded under one
	return c, nil
}

// Excused returns the excused deliveries of d, read when the claims were
// taken (ClaimAndCount).
func (c *Claims) Excused(d Delivery) int { return c.excused[d] }

// Markers is how many of the ids have a marker.
func (c *Claims) Markers() int { return len(c.markers) }

// Held reports whether this claim holds upload id.
func (c *Claims) Held(id string) bool { return c.locks.Held(id) }

// Marker returns the marker of upload id, if it has one: recorded before
// the claim, or by the previous holder of a claim held now.
func (c *Claims) Marker(id string) (Marker, bool) {
	m, ok := c.markers[id]
	return m, ok
}

// InTx writes, in the transaction that records markers, what must commit
// with them: won are the indexes of the markers this transaction inserted.
// It returns nil, or one error per index of won: an item with an error is
// refused, and the transaction is rolled back and run again without it.
type InTx func(ctx context.Context, tx pgx.Tx, won []int) ([]error, error)

// Queue queues on b the writes InTx would make for the markers at idx,
// all of them new: Record sends them with the markers' insert and the
// commit, in one round trip. Their results are not looked at before the
// commit: what Queue queues must fail on the server rather than skip or
// refuse anything, so that the transaction rolls back and Record runs
// again through InTx.
type Queue func(b *pgx.Batch, idx []int)

// Writes are what a transaction that records markers writes besides them.
type Writes struct {
	// InTx, if set, writes them in the transaction.
	InTx InTx
	// Queue, if set with InTx, queues them for a record whose markers are
	// all new, which then costs one round trip instead of two plus InTx's.
	Queue Queue
}

// Record inserts the markers ms, skipping those whose (UploadID, Step)
// exists, in one transaction on the claim's connection, and then gives up
// the claims on their ids. w.InTx (if not nil) runs in the same transaction
// with the indexes into ms this call inserted, and everything commits
// together or not at all. When it refuses markers, the transaction is
// rolled back and run again without them, until it refuses none: a refused
// marker is not stored, and its claim stays held (until Release).
//
// Record returns, for each of ms, the marker now stored and whether this
// call inserted it; refused is nil, or holds, for each of ms, the error
// InTx refused it with (nil for the others).
//
// Without InTx, the whole of it is one round trip; with it, two besides
// InTx's own: the transaction begins together with the markers' insert,
// and commits together with the claims' release. With w.Queue, a record
// whose markers are all new is one round trip too. The claims are given up
// only once the markers are committed, so the next holder sees them.
func (c *Claims) Record(ctx context.Context, ms []Marker, w Writes) (stored []Marker, won []bool, refused []error, err error) {
	conn := c.locks.Conn()
	if conn == nil {
		return nil, nil, nil, fmt.Errorf("marker: record under claims on step %s: no claim held", c.step)
	}
	stored, won, refused, err = recordRefusing(ctx, conn.Conn(), ms, w, c.step, c.locks)
	if errors.Is(err, errConnLost) {
		c.locks.Discard()
	}
	return stored, won, refused, err
}

// RecordMany is Claims.Record without claims, for a step whose side effect
// writes nothing outside w.InTx: the markers' primary key alone decides which
// of two concurrent runs is recorded, and the other's result is dropped
// (won is false for it, and stored holds the winner's marker). It takes a
// connection from the pool for the transaction.
func (s *Store) RecordMany(ctx context.Context, ms []Marker, w Writes) (stored []Marker, won []bool, refused []error, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("marker: record %d markers: %w", len(ms), err)
	}
	// A connection left inside a transaction is closed by Release.
	defer conn.Release()
	return recordRefusing(ctx, conn.Conn(), ms, w, "", nil)
}

// recordRefusing records ms on conn (see record) until w.InTx refuses none of
// those left, and then gives up the claims of step in locks (nil: none)
// on the markers recorded; see Claims.Record.
func recordRefusing(ctx context.Context, conn *pgx.Conn, ms []Marker, w Writes, step string, locks *pglock.Set) (stored []Marker, won []bool, refused []error, err error) {
	stored, won = make([]Marker, len(ms)), make([]bool, len(ms))
	left := make([]int, len(ms)) // the indexes into ms still to record
	for i := range left {
		left[i] = i
	}
	for len(left) > 0 {
		batch, ids := make([]Marker, len(left)), make([]string, 0, len(left))
		for k, i := range left {
			batch[k] = ms[i]
			if locks != nil && ms[i].Step == step {
				ids = append(ids, ms[i].UploadID)
			}
		}
		var release []string
		if locks != nil {
			release = locks.HeldOf(ids)
		}
		into := func(idx []int) []int { // indexes into batch, as indexes into ms
			out := make([]int, len(idx))
			for k, i := range idx {
				out[k] = left[i]
			}
			return out
		}
		var attempt Writes
		if w.InTx != nil {
			attempt.InTx = func(ctx context.Context, tx pgx.Tx, won []int) ([]error, error) {
				return w.InTx(ctx, tx, into(won))
			}
		}
		if w.Queue != nil {
			attempt.Queue = func(b *pgx.Batch, idx []int) { w.Queue(b, into(idx)) }
		}
		got, gotWon, r, err := record(ctx, conn, batch, attempt, locks, release)
		if err != nil {
			return nil, nil, nil, err
		}
		if r != nil { // rolled back: again, without the refused
			if refused == nil {
				refused = make([]error, len(ms))
			}
			kept := left[:0]
			for k, i := range left {
				if r[k] != nil {
					refused[i] = r[k]
				} else {
					kept = append(kept, i)
				}
			}
			left = kept
			continue
		}
		for k, i := range left {
			stored[i], won[i] = got[k], gotWon[k]
		}
		if locks != nil {
			locks.Forget(release) // no claim left: the connection goes back
		}
		break
	}
	return stored, won, refused, nil
}

// Release gives up the claims still held. It is safe to call more than
// once; it costs a round trip only when Record did not give them all up.
func (c *Claims) Release() { c.locks.Release() }

// Claim is the claim on one step of one upload: a batch of one.
type Claim struct {
	claims *Claims
	id     string
}

// Claim takes the claim on (id, step) and reads its marker under it. It
// returns ErrBusy at once when another worker holds the claim. A step
// already finished needs no claim: Claim then holds none, and Marker
// returns the step's marker.
func (s *Store) Claim(ctx context.Context, id, step string) (*Claim, error) {
	cs, err := s.ClaimMany(ctx, step, []string{id})
	if err != nil {
		return nil, err
	}
	if _, done := cs.Marker(id); !cs.Held(id) && !done {
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
	if !c.claims.Held(c.id) {
		return c.claims.store.Record(ctx, m, inTx)
	}
	stored, won, _, err := c.claims.Record(ctx, []Marker{m}, Writes{InTx: oneTx(inTx)})
	if err != nil {
		return Marker{}, false, err
	}
	return stored[0], won[0], nil
}

// Release gives up the claim. It is safe to call more than once.
func (c *Claim) Release() { c.claims.Release() }

// Record is Claim.Record without a claim, for callers that rely on the
// marker's primary key alone.
func (s *Store) Record(ctx context.Context, m Marker, inTx func(context.Context, pgx.Tx) error) (Marker, bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return Marker{}, false, fmt.Errorf("marker: record %s/%s: %w", m.UploadID, m.Step, err)
	}
	// A connection left inside a transaction is closed by Release.
	defer conn.Release()
	stored, won, _, err := record(ctx, conn.Conn(), []Marker{m}, Writes{InTx: oneTx(inTx)}, nil, nil)
	if err != nil {
		return Marker{}, false, err
	}
	return stored[0], won[0], nil
}

// oneTx adapts the inTx of one marker to that of a batch: it runs only
// when the marker was inserted.
func oneTx(inTx func(context.Context, pgx.Tx) error) InTx {
	if inTx == nil {
		return nil
	}
	return func(ctx context.Context, tx pgx.Tx, won []int) ([]error, error) {
		if len(won) == 0 {
			return nil, nil
		}
		return nil, inTx(ctx, tx)
	}
}
