// Package uploadview shows operators what the pipeline did with uploads, from
// what it recorded: ingest's records (ingest_uploads), the steps' markers
// (step_markers), the references (upload_refs, subject_refs), the events in
// the UPLOADS stream, the dead letters in UPLOADS_DLQ and the durable
// consumers' progress. It computes an upload's state and timeline, finds
// uploads by id, subject or Idempotency-Key, and lists the uploads that are
// stuck and why. blobrefctl's console and its stuck command show what it
// returns.
//
// It only reads. Give it a pool opened with OpenPool, whose transactions are
// read-only, so that no query of it can write even by mistake.
package uploadview

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// View reads the pipeline's Postgres tables and JetStream streams.
type View struct {
	Pool *pgxpool.Pool
	JS   jetstream.JetStream
}

// ErrNotFound is returned for an upload that nothing knows of.
var ErrNotFound = errors.New("uploadview: no such upload")

// OpenPool opens a pool on url whose transactions are read-only
// (default_transaction_read_only), and checks that its schema holds the
// pipeline's tables.
func OpenPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: DATABASE_URL: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	cfg.MaxConns = min(cfg.MaxConns, 4)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if _, err := pool.Exec(ctx, `SELECT FROM ingest_uploads, step_markers, upload_refs, subject_refs LIMIT 0`); err != nil {
		pool.Close()
		return nil, pgError("postgres", err)
	}
	return pool, nil
}

// pgError wraps err, saying what an undefined table most likely means.
func pgError(what string, err error) error {
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == "42P01" {
		return fmt.Errorf("%s: %w (DATABASE_URL does not reach blobref's tables: is it the services' database, and its search_path their schema?)", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
