package testenv

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// procWait bounds how long a Proc's Await methods wait: a start, an exit.
const procWait = 2 * time.Minute

// procStopGrace is how long Stop waits after SIGTERM before SIGKILL.
const procStopGrace = 40 * time.Second

// procClient is the Await methods' client: no connection outlives a
// request, so no goroutine outlives a test.
var procClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}

// Proc is a program a test runs as a process (a service binary, blobrefctl):
// its output kept, stopped with SIGTERM in the test's cleanup, which fails
// the test if it then exits uncleanly, and an excerpt of its log shown if
// the test failed (ShowLog).
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  SyncBuffer
	done chan struct{} // closed once cmd has exited
	err  error         // Wait's, once done is closed
}

// StartProc starts bin with args and env (the whole environment: nil
// passes on the test's own) under name, which its messages use.
func StartProc(t testing.TB, name, bin string, args, env []string) *Proc {
	t.Helper()
	p := &Proc{Name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...) // #nosec G204 -- a program the test built or testtools installed
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s (%s): %v", name, bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(t)
		ShowLog(t, fmt.Sprintf("%s (pid %d)", name, p.cmd.Process.Pid), p.Output())
	})
	return p
}

// Output is what the process wrote so far, stdout and stderr.
func (p *Proc) Output() string { return p.out.String() }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is how the process ended (Wait's error) once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Stop sends SIGTERM and waits for the exit (SIGKILL after 40s). The test
// fails if the process did not then stop cleanly; one that had already
// exited is left as it is (how it ended is Err's).
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	if err := p.stop(); err != nil {
		t.Errorf("%s: %v", p.Name, err)
	}
}

func (p *Proc) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(procStopGrace)
	defer timer.Stop()
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("exit after SIGTERM: %w, want 0", p.err)
		}
		return nil
	case <-timer.C:
		p.Kill()
		return fmt.Errorf("no exit within %v of SIGTERM: killed", procStopGrace)
	}
}

// Kill kills the process (SIGKILL, a crash) and waits until it is gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// AwaitExit waits for the process to exit by itself and returns how it
// ended.
func (p *Proc) AwaitExit(t testing.TB) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(procWait):
		t.Fatalf("%s did not exit within %v", p.Name, procWait)
		return nil
	}
}

// AwaitCrash waits for the process to die of SIGKILL (a failpoint's crash).
func (p *Proc) AwaitCrash(t testing.TB) {
	t.Helper()
	err := p.AwaitExit(t)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("%s: got exit %v, want death by SIGKILL", p.Name, err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%s: got exit %v, want death by SIGKILL", p.Name, err)
	}
}

// Answers reports whether url answers 200 now to a GET with header h.
func (p *Proc) Answers(url string, h http.Header) bool {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	maps.Copy(req.Header, h)
	resp, err := procClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// AwaitHTTP polls url (a GET with header h) until it answers 200. The test
// fails if the process exits first, or after two minutes.
func (p *Proc) AwaitHTTP(t testing.TB, url string, h http.Header) {
	t.Helper()
	p.await(t, "no 200 from "+url, func() bool { return p.Answers(url, h) })
}

// AwaitReady waits until the service's /readyz on addr (its METRICS_ADDR)
// answers 200.
func (p *Proc) AwaitReady(t testing.TB, addr string) {
	t.Helper()
	p.AwaitHTTP(t, "http://"+addr+"/readyz", nil)
}

// AwaitOutput waits until the process has written text.
func (p *Proc) AwaitOutput(t testing.TB, text string) {
	t.Helper()
	p.await(t, fmt.Sprintf("no %q in its output", text), func() bool { return strings.Contains(p.Output(), text) })
}

// await polls done until it holds, failing the test if the process exits
// first or procWait passes; its log follows the failure (ShowLog).
func (p *Proc) await(t testing.TB, what string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(procWait)
	for !done() {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) while the test waited: %s; its log follows", p.Name, p.err, what)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s after %v; its log follows", p.Name, what, procWait)
		}
	}
}

// ServiceEnv is the environment tests give a service binary: the test's own
// environment, how to reach NATS, Postgres and the bucket, text logs, and
// quick retries and shutdowns.
func ServiceEnv(natsURL, databaseURL, blobURL string) []string {
	return append(os.Environ(),
		"NATS_URL="+natsURL,
		"DATABASE_URL="+databaseURL,
		"BLOB_URL="+blobURL,
		"LOG_LEVEL=info",
		"LOG_FORMAT=text",
		"CONSUMER_ACK_WAIT=3s",
		"CONSUMER_BACKOFF_BASE=50ms",
		"CONSUMER_BACKOFF_MAX=500ms",
		"SHUTDOWN_TIMEOUT=10s",
	)
}
