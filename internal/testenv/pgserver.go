package testenv

import (
	"context"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blobref/blobref/internal/dbschema"
	"github.com/blobref/blobref/internal/pgserver"
)

// PGServer is a Postgres instance of one test's own (a temporary
// pgserver.Server), so that the test may stop and start it (an outage)
// without touching the machine's shared server.
type PGServer struct {
	t   testing.TB
	srv *pgserver.Server
}

// StartPGServer initialises a cluster and starts it on a free port; the
// test's cleanup stops it and removes it, and shows the end of its log if
// the test failed. A test that cannot start one fails: it never skips.
func StartPGServer(t testing.TB) *PGServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A throwaway cluster: no fsync, and fewer connections and buffers than
	// a pgserver's defaults, as many tests may run one at once.
	srv, err := pgserver.Start(ctx, pgserver.Config{Settings: []string{"max_connections=200", "shared_buffers=16MB", "fsync=off"}})
	if err != nil {
		t.Fatalf("pgserver: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := os.ReadFile(srv.LogPath()); err == nil {
				t.Logf("--- postgres (port %d) log:\n%s", srv.Port, tail(string(log), 40))
			}
		}
		if err := srv.Stop(); err != nil {
			t.Errorf("pgserver: %v", err)
		}
	})
	return &PGServer{t: t, srv: srv}
}

// Chown gives path to the user the server runs as, so that it may use it
// (a tablespace's directory, say). Without a separate user it does nothing.
func (s *PGServer) Chown(path string) error { return s.srv.Chown(path) }

// LogPath is the server's log file.
func (s *PGServer) LogPath() string { return s.srv.LogPath() }

// URL is a DATABASE_URL of the instance's postgres database.
func (s *PGServer) URL() string { return s.srv.URL("") }

// Start starts the server again after Stop and waits until it accepts
// connections.
func (s *PGServer) Start() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.srv.Resume(ctx); err != nil {
		s.t.Fatal(err)
	}
}

// Stop shuts the server down (fast: sessions are ended, as an
// administrator's shutdown does) and waits until it is gone.
func (s *PGServer) Stop() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.t.Fatal(err)
	}
}

// Postgres creates a schema of the test's own in the instance, migrates it
// and returns a pool bound to it, as StartPostgres does in the shared
// server. The pool is closed by the test's cleanup.
func (s *PGServer) Postgres() *Postgres {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t := s.t
	admin, err := pgxpool.New(ctx, s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	pg := &Postgres{Schema: "t_private"}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pg.Schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	u, _ := url.Parse(s.URL())
	q := u.Query()
	q.Set("search_path", pg.Schema)
	u.RawQuery = q.Encode()
	pg.URL = u.String()
	if pg.Pool, err = pgxpool.New(ctx, pg.URL); err != nil {
		t.Fatalf("postgres pool: %v", err)
	}
	t.Cleanup(pg.Pool.Close)
	if err := dbschema.Migrate(ctx, pg.Pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pg
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	end := len(s)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' && i < len(s)-1 {
			n--
			if n == 0 {
				return s[i+1 : end]
			}
		}
	}
	return s
}
