package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Process is one program of the pipeline running as a child process, its
// output going to a log file.
type Process struct {
	// Name is the program's name, e.g. "ingest".
	Name string
	// MetricsAddr is where a service serves /readyz and /metrics ("" for
	// nats-server).
	MetricsAddr string

	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{} // closed once the process has exited
	err     error         // its exit; read after done is closed
}

// startProcess starts bin with env, its output appended to logPath.
func startProcess(name, bin string, args, env []string, logPath string) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) // #nosec G304 -- a log in the bench's own directory
	if err != nil {
		return nil, fmt.Errorf("pipeline: %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...) // #nosec G204 -- a program the bench built
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("pipeline: start %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, logPath: logPath, logFile: logFile, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// exited returns the process's exit error and true once it has exited.
func (p *Process) exited() (error, bool) {
	select {
	case <-p.done:
		if p.err == nil {
			return errors.New("exited with status 0"), true
		}
		return p.err, true
	default:
		return nil, false
	}
}

// Alive returns an error if the process has exited.
func (p *Process) Alive() error {
	if err, ok := p.exited(); ok {
		return fmt.Errorf("%s %w:\n%s", p.Name, err, p.Tail(20))
	}
	return nil
}

// Tail returns the last n lines of the process's output.
func (p *Process) Tail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// awaitReady polls the service's /readyz until it answers 200, the process
// exits or ctx is done.
func (p *Process) awaitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := p.Alive(); err != nil {
			return fmt.Errorf("pipeline: while starting, %w", err)
		}
		if resp, err := client.Get("http://" + p.MetricsAddr + "/readyz"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pipeline: %s not ready: %w\n%s", p.Name, context.Cause(ctx), p.Tail(20))
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM, waits up to timeout for the process to exit, and
// kills it after that. It returns an error unless the process exited
// cleanly on SIGTERM.
func (p *Process) stop(timeout time.Duration) error {
	defer p.logFile.Close()
	if err, ok := p.exited(); ok {
		return fmt.Errorf("%s had %w before it was stopped:\n%s", p.Name, err, p.Tail(20))
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s: exit after SIGTERM: %w:\n%s", p.Name, p.err, p.Tail(20))
		}
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM: killed", p.Name, timeout)
	}
}

// Metrics reads the service's /metrics, in Prometheus's text format.
func (p *Process) Metrics(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	if p.MetricsAddr == "" {
		return nil, fmt.Errorf("pipeline: %s serves no metrics", p.Name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.MetricsAddr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %s: %w", p.Name, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %s metrics: %w", p.Name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pipeline: %s metrics: %s", p.Name, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %s metrics: %w", p.Name, err)
	}
	return families, nil
}
