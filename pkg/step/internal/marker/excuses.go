package marker

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Delivery names one stream message as a step's consumer sees it.
type Delivery struct {
	Stream string
	Seq    uint64
}

// Excuse adds to each message of step the number of its deliveries that
// failed because a dependency was down (excused[d]), in one statement.
func (s *Store) Excuse(ctx context.Context, step string, excused map[Delivery]int) error {
	if len(excused) == 0 {
		return nil
	}
	streams, seqs, counts := make([]string, 0, len(excused)), make([]int64, 0, len(excused)), make([]int32, 0, len(excused))
	for d, n := range excused {
		streams, seqs, counts = append(streams, d.Stream), append(seqs, int64(d.Seq)), append(counts, int32(n)) // #nosec G115 -- a stream sequence is below 2^63; a delivery count is at most MaxDeliveries
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO excused_deliveries AS e (step, stream, seq, excused)
		SELECT $1, stream, seq, n FROM unnest($2::text[], $3::bigint[], $4::int[]) AS t(stream, seq, n)
		ORDER BY stream, seq
		ON CONFLICT (step, stream, seq) DO UPDATE
		SET excused = e.excused + EXCLUDED.excused, updated_at = now()`, step, streams, seqs, counts)
	if err != nil {
		return fmt.Errorf("marker: excuse %d deliveries of step %s: %w", len(excused), step, err)
	}
	return nil
}

const selectExcused = `
	SELECT e.stream, e.seq, e.excused FROM excused_deliveries e
	JOIN unnest($2::text[], $3::bigint[]) AS t(stream, seq) ON e.stream = t.stream AND e.seq = t.seq
	WHERE e.step = $1`

// Excused returns how many deliveries of each of ds were excused for step;
// messages without any are left out.
func (s *Store) Excused(ctx context.Context, step string, ds []Delivery) (map[Delivery]int, error) {
	if len(ds) == 0 {
		return map[Delivery]int{}, nil
	}
	streams, seqs := deliveryArgs(ds)
	rows, err := s.pool.Query(ctx, selectExcused, step, streams, seqs)
	if err != nil {
		return nil, fmt.Errorf("marker: excused deliveries of step %s: %w", step, err)
	}
	found, err := scanExcused(rows, len(ds))
	if err != nil {
		return nil, fmt.Errorf("marker: excused deliveries of step %s: %w", step, err)
	}
	return found, nil
}

func deliveryArgs(ds []Delivery) ([]string, []int64) {
	streams, seqs := make([]string, len(ds)), make([]int64, len(ds))
	for i, d := range ds {
		streams[i], seqs[i] = d.Stream, int64(d.Seq) // #nosec G115 -- a stream sequence is below 2^63
	}
	return streams, seqs
}

func scanExcused(rows pgx.Rows, n int) (map[Delivery]int, error) {
	found := make(map[Delivery]int, n)
	var (
		d   Delivery
		seq int64
		k   int
	)
	_, err := pgx.ForEachRow(rows, []any{&d.Stream, &seq, &k}, func() error {
		d.Seq = uint64(seq) // #nosec G115 -- a sequence Excuse stored from a uint64: never negative
		found[d] = k
		return nil
	})
	return found, err
}

// Ping reports whether Postgres answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }
