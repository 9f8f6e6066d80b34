package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// emulatorStartTimeout bounds an emulator's start-up, bucket included.
const emulatorStartTimeout = 60 * time.Second

// emulator is a storage emulator process owned by one test (fake-gcs-server,
// Azurite): started with its output kept, stopped in the test's cleanup,
// and the end of its log shown after the test's own failures.
type emulator struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  SyncBuffer
}

func startEmulator(t testing.TB, name, bin string, args ...string) *emulator {
	t.Helper()
	e := &emulator{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})} // #nosec G204 -- an emulator testtools installed
	e.cmd.Stdout, e.cmd.Stderr = &e.log, &e.log
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start %s %s: %v", name, bin, err)
	}
	go func() { _ = e.cmd.Wait(); close(e.done) }()
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("--- %s (pid %d), the end of its log:\n%s", name, e.cmd.Process.Pid, e.tail(40))
		}
	})
	return e
}

// awaitHTTP polls url until the emulator answers it at all.
func (e *emulator) awaitHTTP(ctx context.Context, url string) error {
	for {
		select {
		case <-e.done:
			return errors.New("exited while starting")
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no answer on %s: %w", url, ctx.Err())
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// tail returns the last n lines of the emulator's output.
func (e *emulator) tail(n int) string {
	lines := strings.Split(strings.TrimRight(e.log.String(), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[%d lines before]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// stop sends SIGTERM and waits for the process to exit, killing it after 10s.
func (e *emulator) stop() {
	select {
	case <-e.done:
		return
	default:
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.done
	}
}
