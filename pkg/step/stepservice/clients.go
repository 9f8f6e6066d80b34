package stepservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
)

// ConnectNATS connects to NATS as name, retrying until ctx is done, and
// keeps reconnecting forever once connected. Its replies come to
// c.InboxPrefix, by default DefaultInboxPrefix(name).
func ConnectNATS(ctx context.Context, c NATSConfig, name string, log *slog.Logger) (*nats.Conn, error) {
	inbox := c.InboxPrefix
	if inbox == "" {
		inbox = DefaultInboxPrefix(name)
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.CustomInboxPrefix(inbox),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	switch {
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NKey != "":
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("nats: NATS_NKEY: %w", err)
		}
		opts = append(opts, o)
	case c.User != "" && c.PasswordFile != "":
		o, err := passwordFile(c.User, c.PasswordFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, o)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	if c.Cert != "" {
		opts = append(opts, nats.ClientCert(c.Cert, c.Key))
	}
	if c.TLSFirst {
		opts = append(opts, nats.TLSHandshakeFirst())
	}
	var nc *nats.Conn
	err := Retry(ctx, log, "connect to nats", func() error {
		var err error
		nc, err = nats.Connect(c.URL, opts...)
		return err
	})
	return nc, err
}

// passwordFile authenticates as user with the password in the file at path
// (NATS_PASSWORD_FILE). The file is read now, so that a missing one stops
// the service, and again at each reconnect, so that a rotated Secret takes
// effect without a restart (the last password read stays in use while the
// file cannot be read).
func passwordFile(user, path string) (nats.Option, error) {
	read := func() (string, error) {
		b, err := os.ReadFile(path) // #nosec G304 -- NATS_PASSWORD_FILE, the file its operator configured
		return strings.TrimRight(string(b), "\r\n"), err
	}
	pw, err := read()
	if err != nil {
		return nil, fmt.Errorf("nats: NATS_PASSWORD_FILE: %w", err)
	}
	var mu sync.Mutex
	return nats.UserInfoHandler(func() (string, string) {
		mu.Lock()
		defer mu.Unlock()
		if p, err := read(); err == nil {
			pw = p
		}
		return user, pw
	}), nil
}

// SetUpStreams makes sure the streams are there, retrying until ctx is
// done. With setup SetupAuto it creates or updates them as o describes;
// with SetupOff it only waits until UPLOADS exists, which `blobrefctl
// setup` creates (the service's NATS user may not be allowed to).
func SetUpStreams(ctx context.Context, js jetstream.JetStream, setup string, o events.StreamOptions, log *slog.Logger) error {
	if setup == SetupOff {
		what := "look up stream " + events.StreamName + " (NATS_SETUP=off: `blobrefctl setup` creates it)"
		return Retry(ctx, log, what, func() error {
			_, err := js.Stream(ctx, events.StreamName)
			return err
		})
	}
	return Retry(ctx, log, "set up streams", func() error {
		return events.EnsureStreams(ctx, js, o)
	})
}

// NewPool opens a Postgres pool of at least minConns connections, unless
// the URL sets pool_max_conns itself. Its connections keep one generic plan
// per prepared statement (plan_cache_mode force_generic_plan), unless the
// URL sets plan_cache_mode itself.
//
// The services' statements work on a batch, its ids in arrays (unnest).
// Left to choose, Postgres plans such a statement anew on each execution
// whenever batches are small: a custom plan for one id costs less, in its
// estimate, than the generic plan for the ten it guesses, and planning a
// statement of several CTEs cost more than running it (a third of ingest's
// backends' CPU at one client, docs/benchmarks.md). A generic plan is as
// good as the tables' statistics, which autovacuum keeps fresh: the step
// markers' look-ups are written per id and hold without them, but ingest's
// updates joined to ingest_uploads turn to sequential scans (the third
// pass in docs/benchmarks.md), hence the warning of OpenPostgres.
func NewPool(ctx context.Context, url string, minConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: DATABASE_URL: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = max(cfg.MaxConns, minConns)
	}
	if _, set := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; !set {
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return pool, nil
}

// OpenPostgres opens a pool (see NewPool) and applies the schema's
// migrations with migrate (such as step.Migrate), retrying until ctx is
// done.
func OpenPostgres(ctx context.Context, url string, minConns int32, migrate func(context.Context, *pgxpool.Pool) error, log *slog.Logger) (*pgxpool.Pool, error) {
	pool, err := NewPool(ctx, url, minConns)
	if err != nil {
		return nil, err
	}
	err = Retry(ctx, log, "migrate postgres", func() error {
		return migrate(ctx, pool)
	})
	if err != nil {
		pool.Close()
		return nil, err
	}
	warnWithoutAutovacuum(ctx, pool, log)
	return pool, nil
}

// warnWithoutAutovacuum logs a warning when the server's autovacuum is
// off: nothing then refreshes the statistics the services' generic plans
// are made from (NewPool), and a plan made while a table held a few rows
// stands while it grows.
func warnWithoutAutovacuum(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) {
	var on string
	if err := pool.QueryRow(ctx, "SHOW autovacuum").Scan(&on); err != nil || on == "on" {
		return
	}
	log.Warn("postgres: autovacuum is off; run ANALYZE on blobref's tables regularly, or plans made on small tables stand as they grow",
		"autovacuum", on)
}

// storeTooSmallHint is what Retry adds to JetStream's refusal to reserve a
// stream's or bucket's bytes, which names neither the setting nor the sum.
const storeTooSmallHint = "the JetStream server's file store (max_file_store; unset, three quarters of its disk's free space when it started) " +
	"is smaller than what the streams and the staging bucket reserve together: STREAM_MAX_BYTES, DLQ_MAX_BYTES and ingest's STAGING_MAX_BYTES " +
	"(once per replica on a cluster); raise the one or lower the others"

// storeTooSmall says whether err is JetStream's "insufficient storage
// resources available" (err_code 10047): a stream or bucket asked for
// MaxBytes the server's file store cannot reserve.
func storeTooSmall(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsStorageResourcesExceeded
}

// jsStorageResourcesExceeded is JetStream's err_code for a reservation
// its file store cannot hold (nats.go names no constant for it).
const jsStorageResourcesExceeded jetstream.ErrorCode = 10047

// Retry calls fn until it succeeds or ctx is done, backing off up to 5s
// between attempts and logging each failure, with a hint when the failure
// is a JetStream store too small for the streams.
func Retry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	delay := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, errors.Join(err, ctx.Err()))
		}
		attrs := []any{"what", what, "error", err, "delay", delay}
		if storeTooSmall(err) {
			attrs = append(attrs, "hint", storeTooSmallHint)
		}
		log.Warn("retrying", attrs...)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, errors.Join(err, ctx.Err()))
		}
		delay = min(2*delay, 5*time.Second)
	}
}
