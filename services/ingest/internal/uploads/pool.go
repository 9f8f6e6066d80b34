package uploads

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DB is what the operation asks of Postgres: a *pgxpool.Pool, or one whose
// waits for a connection are bounded (BoundedPool).
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// BoundedPool returns pool as a DB whose statements wait at most wait for
// a connection: a statement that finds every connection taken for that
// long fails with ErrOverloaded instead of queueing without end. A wait of
// 0 or less leaves the waits unbounded.
func BoundedPool(pool *pgxpool.Pool, wait time.Duration) DB {
	if wait <= 0 {
		return pool
	}
	return &boundedPool{pool: pool, wait: wait}
}

// boundedPool runs each statement on a connection it acquires with a
// deadline; the statement itself runs on the caller's context. Acquiring a
// connection the pool holds costs no round trip, so the statements cost
// what they cost on the pool.
type boundedPool struct {
	pool *pgxpool.Pool
	wait time.Duration
}

func (b *boundedPool) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, b.wait)
	defer cancel()
	c, err := b.pool.Acquire(actx)
	if err == nil {
		return c, nil
	}
	// Out of time while every connection was in use: overloaded. Out of
	// time while connecting (Postgres slow or unreachable) is an outage.
	st := b.pool.Stat()
	if ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) && st.AcquiredConns() >= st.MaxConns() {
		return nil, fmt.Errorf("%w: %d connections in use for %v", ErrOverloaded, st.AcquiredConns(), b.wait)
	}
	return nil, err
}

func (b *boundedPool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c, err := b.acquire(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer c.Release()
	return c.Exec(ctx, sql, args...)
}

func (b *boundedPool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c, err := b.acquire(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		c.Release()
		return nil, err
	}
	return &releasingRows{Rows: rows, conn: c}, nil
}

func (b *boundedPool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c, err := b.acquire(ctx)
	if err != nil {
		return errRow{err}
	}
	return &releasingRow{row: c.QueryRow(ctx, sql, args...), conn: c}
}

// releasingRows gives its connection back to the pool once the rows are
// read or closed.
type releasingRows struct {
	pgx.Rows
	conn *pgxpool.Conn
	once sync.Once
}

func (r *releasingRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *releasingRows) Close() {
	r.Rows.Close()
	r.once.Do(r.conn.Release)
}

// releasingRow gives its connection back to the pool once scanned.
type releasingRow struct {
	row  pgx.Row
	conn *pgxpool.Conn
}

func (r *releasingRow) Scan(dest ...any) error {
	defer r.conn.Release()
	return r.row.Scan(dest...)
}

// errRow is a row that could not be read.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
