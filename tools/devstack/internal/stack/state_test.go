//go:build unix

package stack

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blobref/blobref/internal/testenv"
)

// The NATS port a stack fell back to is remembered in the data directory:
// the next start on it gets the same port, and says export NATS_URL with
// it.
func TestNATSPortStableAcrossStarts(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	taken := ln.Addr().(*net.TCPAddr).Port
	bin := fakeBin(t, graceful, graceful)
	dataDir := t.TempDir()

	var urls []string
	for run := range 2 {
		out := &testenv.SyncBuffer{}
		cfg := fakeConfig(t, bin, out)
		cfg.DataDir = dataDir
		cfg.NATSPort, cfg.NATSPortFallback = taken, true
		r := runStack(t, cfg)
		r.waitReady(t, 30*time.Second)
		u := r.st.NATSURL()
		if u == fmt.Sprintf("nats://127.0.0.1:%d", taken) {
			t.Fatalf("run %d: NATS on the taken port %d", run+1, taken)
		}
		waitOutput(t, out, "devstack   |   export NATS_URL="+u+"\n", "blobwriter | started", "refwriter  | started")
		urls = append(urls, u)
		r.stop()
		if err := r.waitExit(t, 30*time.Second); err != nil {
			t.Fatalf("run %d: %v", run+1, err)
		}
	}
	if urls[0] != urls[1] {
		t.Errorf("NATS_URL: first run %s, second run %s; want the same", urls[0], urls[1])
	}
	st, err := loadState(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimPrefix(urls[0], "nats://127.0.0.1:"); fmt.Sprint(st.NATSPort) != want {
		t.Errorf("%s: nats_port %d, want %s", stateFile, st.NATSPort, want)
	}
}

// reachableDataDir is a data directory for a stack whose own Postgres runs
// as the postgres user when the test runs as root: every directory above
// it must be searchable by that user.
func reachableDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "data")
}

func queryString(t *testing.T, dbURL, sql string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var v string
	err = conn.QueryRow(ctx, sql).Scan(&v)
	return v, err
}

func execSQL(t *testing.T, dbURL, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// With DATABASE_URL unset and nothing on the Postgres address (a free port
// here, so that the machine's Postgres does not matter), the stack runs a
// Postgres of its own from the machine's binaries, in the data directory,
// with its database created; a second start finds the same cluster on the
// same port; reset removes it all.
func TestOwnPostgres(t *testing.T) {
	t.Parallel()
	bin := fakeBin(t, graceful, graceful)
	dataDir := reachableDataDir(t)
	config := func(out *testenv.SyncBuffer) Config {
		cfg := fakeConfig(t, bin, out)
		cfg.DataDir, cfg.DatabaseURL = dataDir, ""
		cfg.PostgresAddr, cfg.Database = testenv.FreeAddr(t), DefaultDatabase
		return cfg
	}

	out := &testenv.SyncBuffer{}
	r := runStack(t, config(out))
	r.waitReady(t, 2*time.Minute)
	dbURL := r.st.DatabaseURL()
	if db, err := queryString(t, dbURL, "SELECT current_database()"); err != nil || db != DefaultDatabase {
		t.Fatalf("%s: current_database: got %q, %v; want %s", dbURL, db, err, DefaultDatabase)
	}
	waitOutput(t, out, "starting a Postgres of devstack's own (data in "+filepath.Join(dataDir, "postgres")+")",
		"blobwriter | started", "DATABASE_URL="+dbURL+"\n", "refwriter  | started")
	execSQL(t, dbURL, "CREATE TABLE kept (v text)")
	r.stop()
	if err := r.waitExit(t, time.Minute); err != nil {
		t.Fatalf("first run: %v", err)
	}
	waitOutput(t, out, "devstack   | Postgres stopped")
	if _, err := queryString(t, dbURL, "SELECT 'up'"); err == nil {
		t.Errorf("devstack's Postgres still answers on %s after the stack stopped", dbURL)
	}

	out2 := &testenv.SyncBuffer{}
	r2 := runStack(t, config(out2))
	r2.waitReady(t, 2*time.Minute)
	waitOutput(t, out2, "blobwriter | started", "refwriter  | started")
	if got := r2.st.DatabaseURL(); got != dbURL {
		t.Errorf("second run's DATABASE_URL: got %s, want the first's, %s", got, dbURL)
	}
	if n, err := queryString(t, r2.st.DatabaseURL(), "SELECT count(*)::text FROM kept"); err != nil || n != "0" {
		t.Errorf("the first run's table in the second: got %q, %v", n, err)
	}
	r2.stop()
	if err := r2.waitExit(t, time.Minute); err != nil {
		t.Fatalf("second run: %v", err)
	}

	cfg := config(&testenv.SyncBuffer{})
	if err := Reset(context.Background(), cfg); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("%s after Reset: got %v, want it gone", dataDir, err)
	}
}

// With DATABASE_URL unset and a Postgres on the Postgres address (the test
// database's server), the stack creates its own database there; reset
// drops it together with the data directory.
func TestOwnDatabaseOnTheMachinesPostgres(t *testing.T) {
	t.Parallel()
	schema, err := url.Parse(freshSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	database := strings.ToLower(testenv.ID("devstack_test_"))
	dataDir := t.TempDir()
	runOut := &testenv.SyncBuffer{}
	cfg := fakeConfig(t, fakeBin(t, graceful, graceful), runOut)
	cfg.DataDir, cfg.DatabaseURL = dataDir, ""
	cfg.PostgresAddr, cfg.Database = schema.Host, database
	exists := func() string {
		t.Helper()
		v, err := queryString(t, schema.String(), "SELECT count(*)::text FROM pg_database WHERE datname = '"+database+"'")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	t.Cleanup(func() {
		if exists() != "0" {
			_ = dropDatabase(context.Background(), postgresURL(schema.Hostname(), mustPort(t, schema), database))
		}
	})

	r := runStack(t, cfg)
	r.waitReady(t, time.Minute)
	waitOutput(t, runOut, "blobwriter | started", "refwriter  | started")
	if got := exists(); got != "1" {
		t.Fatalf("database %s after the start: %s rows in pg_database, want 1", database, got)
	}
	if db, err := queryString(t, r.st.DatabaseURL(), "SELECT current_database()"); err != nil || db != database {
		t.Errorf("DATABASE_URL %s: current_database %q, %v; want %s", r.st.DatabaseURL(), db, err, database)
	}
	r.stop()
	if err := r.waitExit(t, time.Minute); err != nil {
		t.Fatal(err)
	}

	out := &testenv.SyncBuffer{}
	cfg.Out = out
	if err := Reset(context.Background(), cfg); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if got := exists(); got != "0" {
		t.Errorf("database %s after Reset: %s rows in pg_database, want 0", database, got)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("%s after Reset: got %v, want it gone", dataDir, err)
	}
	waitOutput(t, out, "dropped postgres://postgres@"+schema.Host+"/"+database, "removed "+dataDir)
}

func mustPort(t *testing.T, u *url.URL) int {
	t.Helper()
	var p int
	if _, err := fmt.Sscan(u.Port(), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// Without DATABASE_URL, a Postgres on the Postgres address or server
// binaries to run one, the stack says how to get them, and stops.
func TestNoPostgresServer(t *testing.T) {
	// No t.Parallel: t.Setenv.
	t.Setenv("PG_BINDIR", t.TempDir())
	out := &testenv.SyncBuffer{}
	cfg := fakeConfig(t, fakeBin(t, graceful, graceful), out)
	cfg.DatabaseURL, cfg.PostgresAddr = "", testenv.FreeAddr(t)
	r := runStack(t, cfg)
	err := r.waitExit(t, time.Minute)
	for _, want := range []string{"nothing listens on " + cfg.PostgresAddr, "holds no initdb", "apt-get install postgresql", "set DATABASE_URL"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run: got %v, want an error saying %q", err, want)
		}
	}
	if strings.Contains(out.String(), "started") {
		t.Errorf("the stack started services without a database:\n%s", out.String())
	}
}
