// Package marker is what is left of blobref's marker store, whose home is
// now the step runtime (module github.com/blobref/blobref/pkg/step): a Store
// that tests use to record a step's marker by hand, until they record it
// through package steptest.
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

// Pool is the store's pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Record inserts m unless a marker for its (UploadID, Step) exists; when it
// inserts, inTx (if not nil) runs in the same transaction. It returns the
// marker now stored, and won = true when it was this call's.
func (s *Store) Record(ctx context.Context, m Marker, inTx func(context.Context, pgx.Tx) error) (stored Marker, won bool, err error) {
	if len(m.Result) == 0 {
		m.Result = json.RawMessage("null")
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
			INSERT INTO step_markers (upload_id, step, fingerprint, result) VALUES ($1, $2, $3, $4::text::jsonb)
			ON CONFLICT (upload_id, step) DO NOTHING RETURNING created_at`,
			m.UploadID, m.Step, m.Fingerprint, string(m.Result)).Scan(&m.CreatedAt)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			stored = Marker{UploadID: m.UploadID, Step: m.Step}
			return tx.QueryRow(ctx, `SELECT fingerprint, result, created_at FROM step_markers WHERE upload_id = $1 AND step = $2`,
				m.UploadID, m.Step).Scan(&stored.Fingerprint, &stored.Result, &stored.CreatedAt)
		case err != nil:
			return err
		}
		stored, won = m, true
		if inTx != nil {
			return inTx(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return Marker{}, false, fmt.Errorf("marker: record %s/%s: %w", m.UploadID, m.Step, err)
	}
	return stored, won, nil
}
