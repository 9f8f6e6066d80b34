// Package testenv starts the real servers blobref's tests run against: a
// JetStream server process per test (own port, own store directory) and a
// Postgres schema per test in the local database, migrated from the embedded
// migrations. It also holds what those tests do with them: publish events,
// await the events a step emits and the dead letters it writes, and read its
// counters.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/dbschema"
	"github.com/blobref/blobref/internal/natsproc"
	"github.com/blobref/blobref/pkg/events"
)

// DefaultDatabaseURL is the local Postgres the tests use unless
// BLOBREF_TEST_DATABASE_URL names another.
const DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// NATS is a JetStream server owned by one test: a nats-server process of
// its own (see natsproc), on a free loopback port, with its store in a
// temporary directory.
type NATS struct {
	t        testing.TB
	srv      *natsproc.Server
	StoreDir string
}

// StartNATS starts a JetStream server for the test, with natsproc.Limits;
// the test's cleanup stops it and, if the test failed, shows its warnings
// and errors (ShowLog).
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	return StartNATSConf(t, natsproc.Limits)
}

// StartNATSConf is StartNATS with the server configuration conf (limits
// such as a small max_file_store).
func StartNATSConf(t testing.TB, config string) *NATS {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &NATS{t: t, StoreDir: filepath.Join(dir, "store")}
	srv, err := natsproc.Start(natsproc.Config{StoreDir: n.StoreDir, ConfigFile: conf})
	if err != nil {
		t.Fatal(err)
	}
	n.srv = srv
	t.Cleanup(func() {
		srv.Stop()
		ShowLog(t, "nats-server", srv.Log())
	})
	return n
}

// URL is the client URL of the server.
func (n *NATS) URL() string { return n.srv.URL() }

// Shutdown stops the server (SIGTERM); Restart brings it back on the same
// port and store.
func (n *NATS) Shutdown() { n.srv.Stop() }

// Restart stops the server and starts it again on the same port and store
// directory.
func (n *NATS) Restart() {
	n.t.Helper()
	if err := n.srv.Restart(); err != nil {
		n.t.Fatal(err)
	}
}

// Connect returns a client connection and JetStream context for the test,
// with the pipeline's streams created. Both are closed by the test's
// cleanup.
func (n *NATS) Connect() (*nats.Conn, jetstream.JetStream) {
	n.t.Helper()
	return n.ConnectWith(events.StreamOptions{})
}

// ConnectWith is Connect with the streams configured by o.
func (n *NATS) ConnectWith(o events.StreamOptions) (*nats.Conn, jetstream.JetStream) {
	n.t.Helper()
	nc, js := n.ConnectBare()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, o); err != nil {
		n.t.Fatalf("streams: %v", err)
	}
	return nc, js
}

// ConnectBare returns a client connection and JetStream context for the
// test, creating nothing. Both are closed by the test's cleanup.
func (n *NATS) ConnectBare() (*nats.Conn, jetstream.JetStream) {
	n.t.Helper()
	nc, err := nats.Connect(n.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		n.t.Fatalf("nats connect: %v", err)
	}
	n.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		n.t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Postgres is a schema of its own in the local Postgres, for one test.
type Postgres struct {
	Pool   *pgxpool.Pool
	URL    string // a DATABASE_URL whose search_path is the schema
	Schema string
}

// NewSchema creates an empty schema named prefix plus random hex in the
// test database (BLOBREF_TEST_DATABASE_URL, or DefaultDatabaseURL), drops it
// when the test ends, and returns it with a DATABASE_URL whose search_path
// is that schema. A test that cannot reach Postgres fails: it never skips.
func NewSchema(t testing.TB, prefix string) (schema, databaseURL string) {
	t.Helper()
	base := os.Getenv("BLOBREF_TEST_DATABASE_URL")
	if base == "" {
		base = DefaultDatabaseURL
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("BLOBREF_TEST_DATABASE_URL: %v", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema = prefix + hex.EncodeToString(b[:])
	exec := func(what, sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			return fmt.Errorf("postgres at %s is not reachable (start it, or set BLOBREF_TEST_DATABASE_URL): %w", base, err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s schema %s: %w", what, schema, err)
		}
		return nil
	}
	if err := exec("create", "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := exec("drop", "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Error(err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return schema, u.String()
}

// StartPostgres creates a fresh schema, migrates it and returns a pool bound
// to it. The schema is dropped by the test's cleanup.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pg := &Postgres{}
	pg.Schema, pg.URL = NewSchema(t, "t_")
	var err error
	pg.Pool, err = pgxpool.New(ctx, pg.URL)
	if err != nil {
		t.Fatalf("postgres pool: %v", err)
	}
	t.Cleanup(pg.Pool.Close)
	if err := dbschema.Migrate(ctx, pg.Pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pg
}

// Count runs a counting query and returns its single integer result.
func (pg *Postgres) Count(t testing.TB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := pg.Pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// AwaitCount polls a counting query until it counts n, and fails the test
// if it does not within the given time.
func (pg *Postgres) AwaitCount(t testing.TB, within time.Duration, n int, query string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := pg.Count(t, query, args...)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %d, want %d within %v", query, got, n, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Map runs a query of two columns scanned as strings and returns the second
// by the first, e.g. each row's xmin by id.
func (pg *Postgres) Map(t testing.TB, query string, args ...any) map[string]string {
	t.Helper()
	rows, err := pg.Pool.Query(context.Background(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

// ID returns a fresh token-safe upload id with the given prefix.
func ID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s%x", prefix, b)
}
