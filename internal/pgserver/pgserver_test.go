package pgserver_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blobref/blobref/internal/pgserver"
)

// reachableDir is a temporary directory the postgres user can reach, which
// the server runs as when the test runs as root.
func reachableDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "postgres")
}

func query(t *testing.T, url, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer c.Close(ctx)
	var out string
	if err := c.QueryRow(ctx, sql, args...).Scan(&out); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

func exec(t *testing.T, url, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// A temporary server: initdb, a free port, and Stop removes it all.
func TestTemporary(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := pgserver.Start(ctx, pgserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := query(t, s.URL(""), "SELECT current_database()"); got != "postgres" {
		t.Errorf("current_database: got %q, want postgres", got)
	}
	if err := s.Restart(ctx, "immediate"); err != nil {
		t.Fatalf("restart -m immediate: %v", err)
	}
	query(t, s.URL(""), "SELECT 1::text")
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary directory %s after Stop: got %v, want it gone", s.Dir, err)
	}
}

// A server in a directory of the caller's keeps its cluster across Stop and
// Start, and a Start finds and stops a server left running on it.
func TestKeepsItsCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := reachableDir(t)
	first, err := pgserver.Start(ctx, pgserver.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	exec(t, first.URL(""), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
	if err := first.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}

	second, err := pgserver.Start(ctx, pgserver.Config{Dir: dir, Port: first.Port})
	if err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if got := query(t, second.URL(""), "SELECT v FROM kept"); got != "still here" {
		t.Errorf("after a restart: got %q, want the row written before", got)
	}

	// second is left running, as by a process killed without stopping it.
	third, err := pgserver.Start(ctx, pgserver.Config{Dir: dir})
	if err != nil {
		t.Fatalf("Start over a running server: %v", err)
	}
	t.Cleanup(func() { _ = third.Stop() })
	if third.Port == second.Port {
		t.Fatalf("third Start: port %d, want a new free one", third.Port)
	}
	if got := query(t, third.URL(""), "SELECT v FROM kept"); got != "still here" {
		t.Errorf("after a restart over a running server: got %q, want the row written before", got)
	}
	if _, err := pgx.Connect(ctx, second.URL("")); err == nil {
		t.Errorf("the server left running on port %d still answers", second.Port)
	}
}

// A temporary server shut down keeps its cluster until it resumes, and its
// settings override the defaults.
func TestShutdownResume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := pgserver.Start(ctx, pgserver.Config{Settings: []string{"fsync=off", "max_connections=50"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	for name, want := range map[string]string{"fsync": "off", "max_connections": "50"} {
		if got := query(t, s.URL(""), "SELECT current_setting($1)", name); got != want {
			t.Errorf("%s: got %q, want %q from Settings", name, got, want)
		}
	}
	exec(t, s.URL(""), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if c, err := pgx.Connect(ctx, s.URL("")); err == nil {
		_ = c.Close(ctx)
		t.Fatal("the server answers after Shutdown")
	}
	if err := s.Resume(ctx); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if got := query(t, s.URL(""), "SELECT v FROM kept"); got != "still here" {
		t.Errorf("after Resume: got %q, want the row written before", got)
	}
}
