// Package marker stores per-step completion markers in Postgres: the record
// that one step of one upload finished, with the fingerprint it ran for and
// the result it produced.
//
// The protocol is check, then do, then record, never mark first:
//
//	claims, _ := store.ClaimMany(ctx, step, ids) // one round trip
//	defer claims.Release()
//	for each id: if claims.Marker(id) exists, re-emit its result;
//	             else if claims.Held(id) (exclusive across replicas), do it
//	results := doSideEffects()
//	stored, won, refused, _ := claims.Record(ctx, markers, writesInSameTx) // and release
//
// Record inserts with ON CONFLICT DO NOTHING; what it inserted says who won.
// Writes that must commit atomically with the markers (reference rows) run
// inside the same transaction. Every operation works on a batch of uploads
// in a constant number of round trips; Claim and Record on one upload are
// the batch of one. ClaimMany is one round trip; Record is one more, or two
// plus the step's own statements when the step writes in the transaction
// (one, when it queues them with the markers and they all are new: see
// Writes).
// A step whose side effect writes nothing outside that transaction may skip
// the check and the claims: Store.RecordMany records with the primary key
// alone deciding, and reports the markers other runs recorded first.
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

// ByID are the statements that look markers up by upload id, each taking
// the step ($1) and the ids ($2): their plans are tested.
var ByID = []string{claimSQL, selectMarkers}

// selectMarkers reads the markers of step $1 for the ids $2, each looked
// up on its own, as claimSQL does and for the same reason.
const selectMarkers = `
	SELECT m.upload_id, m.fingerprint, m.result, m.created_at
	FROM unnest($2::text[]) AS t(id)
	CROSS JOIN LATERAL (
		SELECT upload_id, fingerprint, result, created_at FROM step_markers
		WHERE step = $1 AND upload_id = t.id LIMIT 1
	) m`

// targets are the Scan destinations of selectMarkers' columns, the result
// into *result: a []byte receives a copy of the jsonb as it is, where a
// json.RawMessage would be run through json.Unmarshal (pgx scans a
// json.Unmarshaler so), checking JSON that Postgres has checked already.
// Each row's copy is its own, so a marker can keep it.
func (m *Marker) targets(result *[]byte) []any {
	return []any{&m.UploadID, &m.Fingerprint, result, &m.CreatedAt}
}

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
	var result []byte
	_, err = pgx.ForEachRow(rows, m.targets(&result), func() error {
		m.Result = result
		found[m.UploadID] = m
		return nil
	})
	return found, err
}
