package marker

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Purge says which of the step tables' rows no delivery can reach any more.
type Purge struct {
	// Before: markers recorded, and excuses last written, before it go.
	Before time.Time
	// Stream and FirstSeq: excuses of messages of Stream below FirstSeq,
	// its first stored sequence, go too: those messages are gone.
	Stream   string
	FirstSeq uint64
	// DryRun counts the rows instead of deleting them.
	DryRun bool
}

// Purged counts the rows Purge deleted (or, on a dry run, would delete).
type Purged struct {
	Markers int64
	Excuses int64
}

const (
	purgeMarkers = `FROM step_markers WHERE created_at < $1`
	purgeExcuses = `FROM excused_deliveries WHERE updated_at < $1 OR (stream = $2 AND seq < $3)`
)

// Purge deletes (counts, on a dry run) the markers and excused deliveries
// p selects, in one transaction: one statement per table.
func (s *Store) Purge(ctx context.Context, p Purge) (Purged, error) {
	verb := "DELETE "
	if p.DryRun {
		verb = "SELECT count(*) "
	}
	var out Purged
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, q := range []struct {
			sql  string
			args []any
			n    *int64
		}{
			{purgeMarkers, []any{p.Before}, &out.Markers},
			{purgeExcuses, []any{p.Before, p.Stream, int64(min(p.FirstSeq, 1<<63-1))}, &out.Excuses},
		} {
			if p.DryRun {
				if err := tx.QueryRow(ctx, verb+q.sql, q.args...).Scan(q.n); err != nil {
					return err
				}
				continue
			}
			tag, err := tx.Exec(ctx, verb+q.sql, q.args...)
			if err != nil {
				return err
			}
			*q.n = tag.RowsAffected()
		}
		return nil
	})
	if err != nil {
		return Purged{}, fmt.Errorf("marker: purge: %w", err)
	}
	return out, nil
}
