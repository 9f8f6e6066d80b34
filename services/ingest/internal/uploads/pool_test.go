package uploads

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blobref/blobref/internal/testenv"
)

// BoundedPool gives every connection back, and a statement that finds the
// pool taken for longer than its wait fails with ErrOverloaded.
func TestBoundedPool(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	cfg, err := pgxpool.ParseConfig(pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	db := BoundedPool(pool, 100*time.Millisecond)
	ctx := context.Background()

	rows, err := db.Query(ctx, `SELECT generate_series(1, 3)`)
	if err != nil {
		t.Fatal(err)
	}
	nums, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil || len(nums) != 3 {
		t.Fatalf("rows: got %v, %v", nums, err)
	}
	var one int
	if err := db.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil || one != 1 {
		t.Fatalf("row: got %d, %v", one, err)
	}
	if _, err := db.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	// Rows left unread give the connection back on Close.
	rows, err = db.Query(ctx, `SELECT generate_series(1, 3)`)
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()
	rows.Close()
	if n := pool.Stat().AcquiredConns(); n != 0 {
		t.Fatalf("connections held after the statements: %d, want 0", n)
	}

	held, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(ctx, `SELECT 1`).Scan(&one); !errors.Is(err, ErrOverloaded) {
		t.Errorf("QueryRow with the pool taken: got %v, want ErrOverloaded", err)
	}
	if _, err := db.Exec(ctx, `SELECT 1`); !errors.Is(err, ErrOverloaded) {
		t.Errorf("Exec with the pool taken: got %v, want ErrOverloaded", err)
	}
	if _, err := db.Query(ctx, `SELECT 1`); !errors.Is(err, ErrOverloaded) {
		t.Errorf("Query with the pool taken: got %v, want ErrOverloaded", err)
	}
	// The caller's own deadline is not an overload.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := db.Exec(cctx, `SELECT 1`); err == nil || errors.Is(err, ErrOverloaded) {
		t.Errorf("Exec on a cancelled context: got %v, want the context's error", err)
	}
	held.Release()
	if err := db.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil {
		t.Errorf("once the connection is free: %v", err)
	}
}
