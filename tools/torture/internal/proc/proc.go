// Package proc runs the torture suite's child processes (services,
// nats-server, Postgres tools): output to a log file, death by SIGKILL or
// SIGTERM on request, and how each one ended.
package proc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is one started child process.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	err     error
	killed  bool // the harness sent SIGKILL
	termed  bool // the harness sent SIGTERM
	logFile *os.File
}

// Start starts path with args and the environment env (added to the
// harness's own), its stdout and stderr appended to logPath.
func Start(name, logPath, path string, env []string, args ...string) (*Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "=== %s start %s\n", time.Now().Format(time.RFC3339Nano), name)
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so a terminal's ^C reaches only the harness,
	// which then stops its children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{}), logFile: f}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		fmt.Fprintf(f, "=== %s exit %s: %v\n", time.Now().Format(time.RFC3339Nano), name, err)
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL and waits for the process to die.
func (p *Process) Kill() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to grace for a clean exit, then SIGKILL.
// It reports whether the process exited on its own within grace.
func (p *Process) Stop(grace time.Duration) bool {
	p.mu.Lock()
	p.termed = true
	p.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
		p.Kill()
		return false
	}
}

// Exit describes how an exited process ended.
type Exit struct {
	SelfKilled bool  // died of SIGKILL the harness did not send (a failpoint crash)
	Requested  bool  // the harness sent SIGKILL or SIGTERM
	Err        error // what Wait returned
}

// Wait waits for the process to exit and says how it ended.
func (p *Process) Wait() Exit {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	e := Exit{Requested: p.killed || p.termed, Err: p.err}
	var ee *exec.ExitError
	if !e.Requested && errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			e.SelfKilled = true
		}
	}
	return e
}

// FreePort returns a loopback port that was free a moment ago.
// It never returns 4222, the port of the machine's shared NATS server.
func FreePort() (int, error) {
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if port != 4222 {
			return port, nil
		}
	}
}

// WaitTCP waits until addr accepts connections or timeout passes.
func WaitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %v: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
