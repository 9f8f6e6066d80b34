// Package natsproc runs nats-server as a process of its own, built from the
// github.com/nats-io/nats-server/v2 module version the workspace requires,
// on a loopback port and with its own store directory.
//
// Tests use it rather than a server inside the test process: the race
// detector of a test process then checks blobref's code and its clients, not
// the server's (a data race inside nats-server's JetStream API handling once
// failed CI, and such races are upstream's to fix), and a test can stop,
// kill and restart the server as an operator's machine would.
package natsproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/blobref/blobref/internal/freeport"
	"github.com/blobref/blobref/internal/testtools"
)

// Module is the Go module the server is built from.
const Module = testtools.NATSServerModule

// How long a server may take to accept connections, and to stop after
// SIGTERM before it is killed.
const (
	readyTimeout = 15 * time.Second
	stopTimeout  = 10 * time.Second
)

// Binary returns a nats-server executable of the module version the
// workspace requires, built the first time (about a minute on a cold build
// cache) into the user's cache directory, where later processes find it
// (see testtools.NATSServer). It must run inside the workspace.
func Binary() (string, error) { return testtools.NATSServer() }

// Limits is the configuration of a server whose Config names no file:
// deploy/nats/nats.conf's payload limit and JetStream stores of a fixed
// size. Left unset, nats-server sizes its file store at three quarters of
// the disk's free space when it starts, and the reservations the services'
// streams make (3.25 GiB with their defaults: UPLOADS 1 GiB, UPLOADS_DLQ
// 256 MiB, the staging bucket 2 GiB) fail with "insufficient storage
// resources" whenever the disk has less than 4.4 GiB free, as CI's once
// had. The servers tests start store little, so a fixed size makes them
// start alike on every disk.
const Limits = `max_payload: 8MB
jetstream {
  max_memory_store: 64MB
  max_file_store: 4GB
}
`

// Config is how a server is started.
type Config struct {
	// StoreDir is JetStream's store directory. It may be left empty only
	// when ConfigFile names one (nats-server refuses both).
	StoreDir string
	// ConfigFile, when set, is the server's configuration file; the
	// listen address and port given here override it. Without one the
	// server gets Limits, written beside StoreDir.
	ConfigFile string
	// Port is the client port on 127.0.0.1; 0 takes a free one (see
	// freeport). It stays the same across restarts.
	Port int
	// Args are more command-line flags, e.g. "-m", "8222".
	Args []string
}

// Server is a nats-server process.
type Server struct {
	bin string
	cfg Config
	// logFile receives what the server logs, across restarts: a file
	// beside StoreDir, or beside ConfigFile when StoreDir is empty.
	logFile string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start starts a server and waits until it accepts client connections
// (JetStream is enabled before that).
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" && cfg.ConfigFile == "" {
		return nil, errors.New("natsproc: no store directory")
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if cfg.Port == 0 {
		if cfg.Port, err = freeport.Port(); err != nil {
			return nil, err
		}
	}
	if cfg.ConfigFile == "" {
		cfg.ConfigFile = filepath.Clean(cfg.StoreDir) + ".conf"
		if err := os.WriteFile(cfg.ConfigFile, []byte(Limits), 0o600); err != nil {
			return nil, fmt.Errorf("natsproc: %w", err)
		}
	}
	s := &Server{bin: bin, cfg: cfg, logFile: filepath.Clean(cfg.StoreDir) + ".log"}
	if cfg.StoreDir == "" {
		s.logFile = cfg.ConfigFile + ".log"
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// URL is the server's client URL.
func (s *Server) URL() string { return "nats://" + s.addr() }

func (s *Server) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.cfg.Port))
}

func (s *Server) start() error {
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(s.cfg.Port), "-js"}
	if s.cfg.StoreDir != "" {
		args = append(args, "-sd", s.cfg.StoreDir)
	}
	if s.cfg.ConfigFile != "" {
		args = append([]string{"-c", s.cfg.ConfigFile}, args...)
	}
	args = append(args, s.cfg.Args...)
	log, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("natsproc: %w", err)
	}
	defer log.Close() // the child has its own descriptor
	// #nosec G204 -- the nats-server testtools built, with the caller's flags
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("natsproc: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	if err := s.awaitReady(done); err != nil {
		_ = cmd.Process.Kill()
		<-done
		return err
	}
	return nil
}

// awaitReady waits until the server greets a client with its INFO line.
func (s *Server) awaitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("natsproc: nats-server exited at start-up:\n%s", s.Tail(20))
		default:
		}
		if greets(s.addr()) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natsproc: nats-server not ready on %s after %s:\n%s", s.addr(), readyTimeout, s.Tail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func greets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "INFO ")
}

// Stop stops the server with SIGTERM, and SIGKILL if it has not exited
// after 10s. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.signal(syscall.SIGTERM)
}

// Kill kills the server with SIGKILL, as a crash of its machine would.
func (s *Server) Kill() {
	s.signal(syscall.SIGKILL)
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart stops the server and starts it again on the same port and store.
func (s *Server) Restart() error {
	s.Stop()
	return s.start()
}

// Log is everything the server has logged.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logFile)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// Tail is the last n lines the server logged.
func (s *Server) Tail(n int) string {
	lines := bytes.Split(bytes.TrimRight([]byte(s.Log()), "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
