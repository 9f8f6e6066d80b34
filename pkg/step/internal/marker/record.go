package marker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/blobref/blobref/pkg/step/internal/pglock"
)

// insertMarkers inserts markers, in one order everywhere so that concurrent
// inserts take the primary key's locks in one order, and returns those it
// inserted.
const insertMarkers = insertNewMarkers + `
	ON CONFLICT (upload_id, step) DO NOTHING
	RETURNING upload_id, step, created_at`

// insertNewMarkers inserts markers as insertMarkers does, and fails on one
// that exists (see recordQueued).
const insertNewMarkers = `
	INSERT INTO step_markers (upload_id, step, fingerprint, result)
	SELECT id, step, fp, result::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(id, step, fp, result)
	ORDER BY id, step`

// errConnLost reports a failure that left the connection unusable (it is
// closed, or stuck inside a transaction that could not be rolled back).
var errConnLost = errors.New("marker: connection lost")

// record inserts ms in one transaction on conn, runs w.InTx in it,
// commits, and then gives up the locks of release in locks. When w.InTx
// refuses some of ms, it rolls back and returns, for each of ms, the error
// it refused it with (nil for the others), and no markers. The transaction
// begins in the markers' round trip and ends in the release's; without
// InTx, or when w.Queue records them all (see recordQueued), it all is one
// round trip. A failure rolls back and leaves the claims held; when even
// that fails, the error wraps errConnLost.
func record(ctx context.Context, conn *pgx.Conn, ms []Marker, w Writes, locks *pglock.Set, release []string) ([]Marker, []bool, []error, error) {
	stored, won := make([]Marker, len(ms)), make([]bool, len(ms))
	if len(ms) == 0 {
		return stored, won, nil, nil
	}
	inTx := w.InTx
	what := fmt.Sprintf("%s/%s", ms[0].UploadID, ms[0].Step)
	if len(ms) > 1 {
		what = fmt.Sprintf("%d markers", len(ms))
	}
	for i, m := range ms {
		if len(m.Result) == 0 {
			m.Result = json.RawMessage("null")
		}
		stored[i] = m
	}
	fail := func(err error) ([]Marker, []bool, []error, error) {
		return nil, nil, nil, rollback(conn, fmt.Errorf("marker: record %s: %w", what, err))
	}
	if w.Queue != nil && inTx != nil {
		switch done, err := recordQueued(ctx, conn, stored, w.Queue, locks, release); {
		case err != nil:
			return nil, nil, nil, fmt.Errorf("marker: record %s: %w", what, err)
		case done:
			for i := range won {
				won[i] = true
			}
			return stored, won, nil, nil
		}
		// Not all new, or what Queue queued failed: again, the way
		// that tells which markers are new and which items are refused.
	}

	var b pgx.Batch
	b.BeginTx(pgx.TxOptions{})
	index := queueMarkers(&b, insertMarkers, stored)
	if inTx == nil {
		queueCommit(&b, locks, release)
	}
	br := conn.SendBatch(ctx, &b)
	tx := br.Tx()
	var wonIdx []int
	err := func() error {
		if err := readInserted(br, index, func(i int, created time.Time) {
			stored[i].CreatedAt, won[i] = created, true
			wonIdx = append(wonIdx, i)
		}); err != nil {
			return err
		}
		if inTx == nil {
			return readCommit(br, len(release) > 0)
		}
		return nil
	}()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	if inTx != nil {
		if len(wonIdx) < len(ms) {
			if err := readLosers(ctx, tx, stored, won); err != nil {
				return fail(err)
			}
		}
		errs, err := inTx(ctx, tx, wonIdx)
		if err != nil {
			return nil, nil, nil, rollback(conn, err)
		}
		if refused := refusals(errs, wonIdx, len(ms)); refused != nil {
			if err := abort(conn); err != nil {
				return nil, nil, nil, fmt.Errorf("marker: record %s: %w", what, err)
			}
			return nil, nil, refused, nil
		}
		var b pgx.Batch
		queueCommit(&b, locks, release)
		br := conn.SendBatch(ctx, &b)
		err = readCommit(br, len(release) > 0)
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fail(fmt.Errorf("commit: %w", err))
		}
		return stored, won, nil, nil
	}
	if len(wonIdx) < len(ms) {
		// Other writers won these; report what they recorded.
		if err := readLosers(ctx, conn, stored, won); err != nil {
			return nil, nil, nil, fmt.Errorf("marker: record %s: %w", what, err)
		}
	}
	return stored, won, nil, nil
}

// recordQueued is the round trip record tries first when the step queues
// its writes (Writes.Queue): it begins the transaction, inserts every one
// of ms as new (insertNewMarkers), runs what queue queues for all of them,
// commits and gives up the locks of release, all in one round trip, and
// sets the CreatedAt of each. A marker that exists, or a statement queue
// queued, fails on the server before the commit: the transaction is
// rolled back, the claims stay held, and it returns false, for record to
// run again the way that tells which markers are new and which items to
// refuse. It returns an error when the rollback fails (the connection is
// lost; it wraps errConnLost) or the failure was not the server's.
func recordQueued(ctx context.Context, conn *pgx.Conn, ms []Marker, queue Queue, locks *pglock.Set, release []string) (bool, error) {
	all := make([]int, len(ms))
	for i := range all {
		all[i] = i
	}
	var b pgx.Batch
	b.BeginTx(pgx.TxOptions{})
	index := queueMarkers(&b, insertNewMarkers+` RETURNING upload_id, step, created_at`, ms)
	queue(&b, all)
	queueCommit(&b, locks, release)
	br := conn.SendBatch(ctx, &b)
	err := readInserted(br, index, func(i int, created time.Time) { ms[i].CreatedAt = created })
	// Close reads the rest: what queue queued (through the callbacks it
	// registered, if any), the commit and the release.
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		return true, nil
	}
	if aerr := abort(conn); aerr != nil {
		return false, fmt.Errorf("%w (%w)", err, aerr)
	}
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) {
		return false, err
	}
	return false, nil
}

// queueMarkers queues insert (insertMarkers, or insertNewMarkers returning
// the same columns) of ms on b, and returns the index of each marker in ms
// by (UploadID, Step).
func queueMarkers(b *pgx.Batch, insert string, ms []Marker) map[[2]string]int {
	ids, steps, fps, results := make([]string, len(ms)), make([]string, len(ms)), make([]string, len(ms)), make([]string, len(ms))
	index := make(map[[2]string]int, len(ms))
	for i, m := range ms {
		ids[i], steps[i], fps[i], results[i] = m.UploadID, m.Step, m.Fingerprint, string(m.Result)
		index[[2]string{m.UploadID, m.Step}] = i
	}
	b.Queue(insert, ids, steps, fps, results)
	return index
}

// readInserted reads the begin and the markers' insert that a batch queued
// first (queueMarkers), and calls inserted with the index of each marker
// it inserted and the time it was created.
func readInserted(br pgx.BatchResults, index map[[2]string]int, inserted func(i int, created time.Time)) error {
	if _, err := br.Exec(); err != nil { // begin
		return err
	}
	rows, err := br.Query()
	if err != nil {
		return err
	}
	var (
		id, step string
		created  time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &step, &created}, func() error {
		inserted(index[[2]string{id, step}], created)
		return nil
	})
	return err
}

// refusals maps the errors inTx returned for the inserted markers won to
// the indexes of all n markers; nil when it refused none.
func refusals(errs []error, won []int, n int) []error {
	var out []error
	for k, err := range errs {
		if err == nil || k >= len(won) {
			continue
		}
		if out == nil {
			out = make([]error, n)
		}
		out[won[k]] = err
	}
	return out
}

// queueCommit queues the commit and, after it, the release of the locks on
// ids: the next holder of a claim sees the committed marker.
func queueCommit(b *pgx.Batch, locks *pglock.Set, ids []string) {
	b.Queue("COMMIT")
	if len(ids) > 0 {
		locks.QueueUnlock(b, ids)
	}
}

// readCommit reads the results queueCommit queued. A commit that fails
// leaves the transaction aborted, and the release does not run.
func readCommit(br pgx.BatchResults, unlock bool) error {
	if _, err := br.Exec(); err != nil {
		return err
	}
	if unlock {
		if _, err := br.Exec(); err != nil {
			return err
		}
	}
	return nil
}

// rollback ends the transaction on conn, if one is open, after err; if it
// cannot, the connection is lost, and so are the claims it holds.
func rollback(conn *pgx.Conn, err error) error {
	if aerr := abort(conn); aerr != nil {
		return fmt.Errorf("%w (%w)", err, aerr)
	}
	return err
}

// abort rolls back the transaction open on conn, if any. An error says the
// connection is lost (it wraps errConnLost): closed, or stuck in the
// transaction.
func abort(conn *pgx.Conn) error {
	if conn.IsClosed() {
		return errConnLost
	}
	if conn.PgConn().TxStatus() == 'I' {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		return fmt.Errorf("rollback: %w, %w", err, errConnLost)
	}
	return nil
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
