// Package pgserver runs a private Postgres instance for one torture run:
// initdb into a temporary directory, its own port and socket directory, so
// the run can restart it (cleanly or by crashing it) without touching the
// machine's shared cluster.
package pgserver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/blobref/blobref/internal/freeport"
)

// Server is a private Postgres instance.
type Server struct {
	Dir  string // holds data/, the socket and the log
	Port int
	bin  string
	// asUser is "postgres" when the harness runs as root: initdb and the
	// server refuse to run as root.
	asUser string
}

// BinDir returns the newest /usr/lib/postgresql/<version>/bin holding
// initdb, or PG_BINDIR when set.
func BinDir() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", fmt.Errorf("pgserver: no initdb under /usr/lib/postgresql/*/bin or on PATH (set PG_BINDIR)")
	}
	sort.Slice(matches, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[j]))))
		return vi < vj
	})
	return filepath.Dir(matches[len(matches)-1]), nil
}

// Start initialises a cluster in a new temporary directory and starts it on
// a free port. Stop removes it.
func Start(ctx context.Context) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "torture-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		s.asUser = "postgres"
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgserver: running as root needs a postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if s.Port, err = freeport.Port(); err != nil {
		return nil, err
	}
	if err := s.run(ctx, "initdb", "-D", s.dataDir(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.pgctl(ctx, "start"); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) dataDir() string { return filepath.Join(s.Dir, "data") }

// LogPath is the server's log file.
func (s *Server) LogPath() string { return filepath.Join(s.Dir, "postgres.log") }

// URL is a DATABASE_URL of the instance's postgres database.
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
}

// Restart restarts the server: mode "fast" shuts it down cleanly,
// "immediate" stops it without a checkpoint, as a crash would, so the start
// runs crash recovery.
func (s *Server) Restart(ctx context.Context, mode string) error {
	return s.pgctl(ctx, "restart", "-m", mode)
}

// Stop stops the server at once and removes its directory.
func (s *Server) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = s.run(ctx, "pg_ctl", "stop", "-D", s.dataDir(), "-m", "immediate", "-w")
	os.RemoveAll(s.Dir)
}

func (s *Server) pgctl(ctx context.Context, verb string, args ...string) error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=32MB", s.Port, s.Dir)
	a := append([]string{verb, "-D", s.dataDir(), "-w", "-t", "60", "-l", s.LogPath(), "-o", opts}, args...)
	return s.run(ctx, "pg_ctl", a...)
}

func (s *Server) run(ctx context.Context, tool string, args ...string) error {
	path := filepath.Join(s.bin, tool)
	var cmd *exec.Cmd
	if s.asUser != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", s.asUser, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = s.Dir
	// pg_ctl's server must not share the harness's stdout: it outlives the
	// command, and a pipe held open would make Output wait for it.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	out, err := os.CreateTemp(s.Dir, "cmd-*.out")
	if err == nil {
		defer os.Remove(out.Name())
		defer out.Close()
		cmd.Stdout, cmd.Stderr = out, out
	}
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		return fmt.Errorf("pgserver: %s %v: %w\n%s", tool, args, err, b)
	}
	return nil
}
