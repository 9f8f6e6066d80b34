package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blobref/blobref/internal/dbschema"
	"github.com/blobref/blobref/internal/freeport"
)

// PGServer is a Postgres instance of one test's own, so that the test may
// stop and start it (an outage) without touching the machine's shared
// server: initdb into a temporary directory, its own port and socket
// directory, from the machine's Postgres binaries (PG_BINDIR, else the
// newest /usr/lib/postgresql/<version>/bin, else initdb on PATH).
type PGServer struct {
	t    testing.TB
	Dir  string // holds data/, the socket and the log
	Port int
	bin  string
	// asUser is "postgres" when the test runs as root: initdb and the
	// server refuse to run as root.
	asUser string
}

// pgBinDir finds the directory of initdb and pg_ctl.
func pgBinDir() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", fmt.Errorf("no initdb under /usr/lib/postgresql/*/bin or on PATH (set PG_BINDIR)")
	}
	version := func(p string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return v
	}
	sort.Slice(matches, func(i, j int) bool { return version(matches[i]) < version(matches[j]) })
	return filepath.Dir(matches[len(matches)-1]), nil
}

// StartPGServer initialises a cluster and starts it on a free port; the
// test's cleanup stops it and removes it, and shows the end of its log if
// the test failed. A test that cannot start one fails: it never skips.
func StartPGServer(t testing.TB) *PGServer {
	t.Helper()
	bin, err := pgBinDir()
	if err != nil {
		t.Fatalf("pgserver: %v", err)
	}
	dir, err := os.MkdirTemp("", "blobref-pg-")
	if err != nil {
		t.Fatal(err)
	}
	s := &PGServer{t: t, Dir: dir, bin: bin}
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := os.ReadFile(s.LogPath()); err == nil {
				t.Logf("--- postgres (port %d) log:\n%s", s.Port, tail(string(log), 40))
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.run(ctx, "pg_ctl", "stop", "-D", s.dataDir(), "-m", "immediate", "-w")
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		s.asUser = "postgres"
		if err := s.Chown(dir); err != nil {
			t.Fatalf("pgserver: running as root needs a postgres user: %v", err)
		}
	}
	if s.Port, err = freeport.Port(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.run(ctx, "initdb", "-D", s.dataDir(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		t.Fatal(err)
	}
	s.Start()
	return s
}

// Chown gives path to the user the server runs as, so that it may use it
// (a tablespace's directory, say). Without a separate user it does nothing.
func (s *PGServer) Chown(path string) error {
	if s.asUser == "" && os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(path, uid, gid)
}

func (s *PGServer) dataDir() string { return filepath.Join(s.Dir, "data") }

// LogPath is the server's log file.
func (s *PGServer) LogPath() string { return filepath.Join(s.Dir, "postgres.log") }

// URL is a DATABASE_URL of the instance's postgres database.
func (s *PGServer) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
}

// Start starts the server (again) and waits until it accepts connections.
func (s *PGServer) Start() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=16MB -c fsync=off", s.Port, s.Dir)
	if err := s.run(ctx, "pg_ctl", "start", "-D", s.dataDir(), "-w", "-t", "110", "-l", s.LogPath(), "-o", opts); err != nil {
		s.t.Fatal(err)
	}
}

// Stop shuts the server down (fast: sessions are ended, as an
// administrator's shutdown does) and waits until it is gone.
func (s *PGServer) Stop() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.run(ctx, "pg_ctl", "stop", "-D", s.dataDir(), "-m", "fast", "-w", "-t", "110"); err != nil {
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

func (s *PGServer) run(ctx context.Context, tool string, args ...string) error {
	path := filepath.Join(s.bin, tool)
	var cmd *exec.Cmd
	if s.asUser != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", s.asUser, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = s.Dir
	// pg_ctl's server outlives the command: it must not hold a pipe of
	// the test's open, or waiting for the command would wait for it.
	out, err := os.CreateTemp(s.Dir, "cmd-*.out")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		return fmt.Errorf("pgserver: %s %v: %w\n%s", tool, args, err, b)
	}
	return nil
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
