// Package pgserver runs a private Postgres instance from the machine's own
// server binaries: initdb into a directory of its own, its own port and
// socket directory, so that it can be restarted (cleanly, or by crashing it)
// without touching the machine's shared cluster. The torture run uses a
// throwaway one; devstack keeps one under .data/postgres across runs.
package pgserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/blobref/blobref/internal/freeport"
)

// ErrNoBinaries is returned when no Postgres server binaries are found.
var ErrNoBinaries = errors.New("pgserver: no Postgres server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on PATH")

// InstallHint says how to get the server binaries on common systems.
const InstallHint = "install the Postgres server (Debian, Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; " +
	"macOS: brew install postgresql@17), or set PG_BINDIR to the directory holding initdb and pg_ctl"

// Config says where a server keeps its files and where it listens.
type Config struct {
	// Dir holds the cluster (Dir/data), the server's socket and its log.
	// A cluster already there is started again; otherwise initdb creates
	// one. Empty: a new temporary directory, which Stop removes.
	Dir string
	// Port is the server's port on 127.0.0.1; 0 takes a free one.
	Port int
	// Settings are server settings (name=value) applied after the
	// defaults, which they override: a test's throwaway cluster may say
	// fsync=off.
	Settings []string
}

// Server is a private Postgres instance.
type Server struct {
	Dir  string // holds data/, the socket and the log
	Port int
	bin  string
	temp bool // Dir is a temporary directory of Start's
	// settings are Config.Settings.
	settings []string
	// asUser is "postgres" when the caller runs as root: initdb and the
	// server refuse to run as root.
	asUser string
}

// BinDir returns the newest /usr/lib/postgresql/<version>/bin holding
// initdb, or PG_BINDIR when set, or the directory of an initdb on PATH.
func BinDir() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil { // #nosec G703 -- PG_BINDIR is its user's choice of Postgres
			return "", fmt.Errorf("%w: PG_BINDIR=%s holds no initdb", ErrNoBinaries, d)
		}
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", ErrNoBinaries
	}
	sort.Slice(matches, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[j]))))
		return vi < vj
	})
	return filepath.Dir(matches[len(matches)-1]), nil
}

// Start starts a server as cfg says, creating its cluster first when Dir
// holds none, and waits until it accepts connections. A server left running
// on Dir's cluster (by a process that died without stopping it) is stopped
// first.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: cfg.Dir, Port: cfg.Port, bin: bin, settings: cfg.Settings}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "pgserver-"); err != nil {
			return nil, err
		}
		s.temp = true
	} else if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("pgserver: %w", err)
	}
	if s.Dir, err = filepath.Abs(s.Dir); err != nil {
		return nil, err
	}
	fail := func(err error) (*Server, error) {
		if s.temp {
			_ = os.RemoveAll(s.Dir)
		}
		return nil, err
	}
	if os.Geteuid() == 0 {
		if err := s.runAsPostgres(); err != nil {
			return fail(err)
		}
	}
	if s.Port == 0 {
		if s.Port, err = freeport.Port(); err != nil {
			return fail(err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.dataDir(), "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := s.run(ctx, "initdb", "-D", s.dataDir(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
			return fail(err)
		}
	} else if err != nil {
		return fail(fmt.Errorf("pgserver: %w", err))
	} else if err := StopLeftover(ctx, s.Dir); err != nil {
		return fail(err)
	}
	if err := s.pgctl(ctx, "start"); err != nil {
		_ = s.Stop() // the start's error says what went wrong
		return nil, err
	}
	return s, nil
}

// runAsPostgres makes the server run as the postgres user, which must own
// Dir and be able to reach it.
func (s *Server) runAsPostgres() error {
	if err := chownPostgres(s.Dir); err != nil {
		return fmt.Errorf("pgserver: running as root needs a postgres user to run the server as: %w", err)
	}
	for dir := filepath.Dir(s.Dir); ; dir = filepath.Dir(dir) {
		if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("pgserver: the server runs as the postgres user, which cannot reach %s: %s is not searchable by others (chmod o+x)", s.Dir, dir)
		}
		if dir == filepath.Dir(dir) {
			break
		}
	}
	s.asUser = "postgres"
	return nil
}

// Chown gives path to the user the server runs as, so that it may use it
// (a tablespace's directory, say). A server that runs as the caller needs
// nothing: Chown does nothing then.
func (s *Server) Chown(path string) error {
	if s.asUser == "" {
		return nil
	}
	if err := chownPostgres(path); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	return nil
}

func chownPostgres(path string) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(path, uid, gid)
}

// StopLeftover stops a server left running on the cluster in dir (a
// Config.Dir) by a process that died without stopping it; a cluster that
// is not running, or none, is left as it is.
func StopLeftover(ctx context.Context, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		return nil
	}
	bin, err := BinDir()
	if err != nil {
		return err
	}
	s := &Server{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		s.asUser = "postgres"
	}
	if s.run(ctx, "pg_ctl", "status", "-D", s.dataDir()) != nil {
		return nil
	}
	return s.run(ctx, "pg_ctl", "stop", "-D", s.dataDir(), "-m", "fast", "-w")
}

func (s *Server) dataDir() string { return filepath.Join(s.Dir, "data") }

// LogPath is the server's log file.
func (s *Server) LogPath() string { return filepath.Join(s.Dir, "postgres.log") }

// URL is a DATABASE_URL of the instance's database named database
// ("postgres" if empty).
func (s *Server) URL(database string) string {
	if database == "" {
		database = "postgres"
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, database)
}

// Restart restarts the server: mode "fast" shuts it down cleanly,
// "immediate" stops it without a checkpoint, as a crash would, so the start
// runs crash recovery.
func (s *Server) Restart(ctx context.Context, mode string) error {
	return s.pgctl(ctx, "restart", "-m", mode)
}

// Stop stops the server. A temporary one is stopped at once (-m immediate)
// and its directory removed; one in Config.Dir shuts down cleanly (-m fast)
// and keeps its cluster for the next Start.
func (s *Server) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if s.temp {
		_ = s.run(ctx, "pg_ctl", "stop", "-D", s.dataDir(), "-m", "immediate", "-w")
		return os.RemoveAll(s.Dir)
	}
	return s.run(ctx, "pg_ctl", "stop", "-D", s.dataDir(), "-m", "fast", "-w")
}

// Shutdown shuts the server down cleanly (-m fast: sessions are ended, as
// an administrator's shutdown does), waits until it is gone and keeps its
// cluster, temporary or not: Resume starts it again.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.run(ctx, "pg_ctl", "stop", "-D", s.dataDir(), "-m", "fast", "-w", "-t", pgctlWait)
}

// Resume starts a server Shutdown stopped and waits until it accepts
// connections.
func (s *Server) Resume(ctx context.Context) error {
	return s.pgctl(ctx, "start")
}

// pgctlWait is how many seconds pg_ctl waits for a start or stop to finish.
const pgctlWait = "110"

func (s *Server) pgctl(ctx context.Context, verb string, args ...string) error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=32MB", s.Port, s.socketDir())
	for _, kv := range s.settings {
		opts += " -c " + kv
	}
	a := append([]string{verb, "-D", s.dataDir(), "-w", "-t", pgctlWait, "-l", s.LogPath(), "-o", opts}, args...)
	return s.run(ctx, "pg_ctl", a...)
}

// socketDir is where the server puts its Unix socket: Dir, or none when
// Dir's path is too long for a socket's (108 bytes on Linux, fewer
// elsewhere); clients connect over TCP.
func (s *Server) socketDir() string {
	if len(s.Dir)+len("/.s.PGSQL.65535.lock") < 100 && !strings.ContainsAny(s.Dir, " '\"\\") {
		return s.Dir
	}
	return "''"
}

func (s *Server) run(ctx context.Context, tool string, args ...string) error {
	path := filepath.Join(s.bin, tool)
	var cmd *exec.Cmd
	if s.asUser != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", s.asUser, "--", path}, args...)...) // #nosec G204 -- a Postgres program of BinDir
	} else {
		cmd = exec.CommandContext(ctx, path, args...) // #nosec G204 -- a Postgres program of BinDir
	}
	cmd.Dir = s.Dir
	// pg_ctl's server must not share the caller's stdout: it outlives the
	// command, and a pipe held open would make Output wait for it.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	out, err := os.CreateTemp(s.Dir, "cmd-*.out")
	if err == nil {
		defer os.Remove(out.Name())
		defer out.Close()
		cmd.Stdout, cmd.Stderr = out, out
	}
	if err := cmd.Run(); err != nil {
		var b []byte
		if out != nil {
			b, _ = os.ReadFile(out.Name())
		}
		return fmt.Errorf("pgserver: %s %s: %w\n%s", tool, strings.Join(args, " "), err, b)
	}
	return nil
}
