//go:build unix

package monitoring

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
)

// process is a running service binary.
type process struct {
	name    string
	metrics string // METRICS_ADDR
	cmd     *exec.Cmd
	out     *testenv.SyncBuffer
	done    chan struct{}
	err     error // of Wait, once done is closed
}

// startService starts bin/name with env and a METRICS_ADDR of its own; the
// test's cleanup stops it and, if the test failed, shows its output.
func (p *pipeline) startService(t *testing.T, bin, name string, env []string) *process {
	t.Helper()
	proc := &process{name: name, metrics: testenv.FreeAddr(t), out: &testenv.SyncBuffer{}, done: make(chan struct{})}
	proc.cmd = exec.Command(filepath.Join(bin, name))
	proc.cmd.Env = append(slices.Clone(env), "METRICS_ADDR="+proc.metrics)
	proc.cmd.Stdout, proc.cmd.Stderr = proc.out, proc.out
	if err := proc.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		proc.err = proc.cmd.Wait()
		close(proc.done)
	}()
	t.Cleanup(func() {
		if err := proc.stop(); err != nil {
			t.Errorf("%s: exit after SIGTERM: %v, want 0", name, err)
		}
		if p.showLogs(t) {
			t.Logf("%s output:\n%s", name, proc.out.String())
		}
	})
	return proc
}

// awaitReady waits for the service's /readyz to answer 200.
func (p *process) awaitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		select {
		case <-p.done:
			t.Fatalf("%s exited before it was ready: %v\n%s", p.name, p.err, p.out.String())
		default:
		}
		if resp, err := httpClient.Get("http://" + p.metrics + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready after %v\n%s", p.name, within, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM, waits for the exit (SIGKILL after 40s) and returns
// Wait's error.
func (p *process) stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(40 * time.Second)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}
