package stack

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// child is one running service process.
type child struct {
	name        string
	metricsAddr string // its METRICS_ADDR
	cmd         *exec.Cmd
	out         *lineWriter
	done        chan struct{} // closed once the process has exited and its output is flushed
	err         error         // the exit error; read only after done is closed

	// Owned by the goroutine running Stack.Run.
	killed   bool
	reported bool
}

// start starts svc; its exit is sent on exited (buffered for every service).
func (s *Stack) start(svc Service, exited chan<- *child) (*child, error) {
	cmd := exec.Command(filepath.Join(s.cfg.BinDir, svc.Name)) // #nosec G204 -- a service make build put in BinDir
	metricsAddr, err := s.listenAddr(svc.Name, "metrics", svc.MetricsAddr, false)
	if err != nil {
		return nil, err
	}
	set := map[string]string{
		"NATS_URL":     s.NATSURL(),
		"DATABASE_URL": s.DatabaseURL(),
		"BLOB_URL":     s.cfg.BlobURL,
		"METRICS_ADDR": metricsAddr,
	}
	httpAddr := ""
	if svc.HTTPAddr != "" {
		if httpAddr, err = s.listenAddr(svc.Name, "API", svc.HTTPAddr, true); err != nil {
			return nil, err
		}
		set["HTTP_ADDR"] = httpAddr
	}
	defaults := maps.Clone(svc.Env)
	if defaults == nil {
		defaults = map[string]string{}
	}
	defaults["LOG_FORMAT"] = "text"
	for name, f := range svc.Files {
		path := filepath.Join(s.cfg.DataDir, f.Name)
		if err := writeNew(path, f.Content); err != nil {
			return nil, fmt.Errorf("stack: %s: %s: %w", svc.Name, name, err)
		}
		defaults[name] = path
	}
	cmd.Env = childEnv(s.cfg.Env, set, defaults)
	c := &child{name: svc.Name, metricsAddr: metricsAddr, cmd: cmd, out: s.out.writer(svc.Name), done: make(chan struct{})}
	// One writer for both streams: exec then uses a single pipe, so the
	// service's lines keep their order.
	cmd.Stdout, cmd.Stderr = c.out, c.out
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 5 * time.Second // a stray grandchild holding the pipe cannot block Wait
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("stack: start %s: %w", svc.Name, err)
	}
	s.mu.Lock()
	s.pids = append(s.pids, cmd.Process.Pid)
	if _, port, _ := net.SplitHostPort(metricsAddr); port != "0" {
		s.metrics = append(s.metrics, svc.Name+" http://"+dialAddr(metricsAddr))
	}
	if httpAddr != "" {
		s.apis = append(s.apis, api{service: svc.Name, url: "http://" + dialAddr(httpAddr), env: cmd.Env})
	}
	s.mu.Unlock()
	if httpAddr != "" {
		s.out.printf("devstack", "started %s (pid %d, METRICS_ADDR %s, HTTP_ADDR %s)", svc.Name, cmd.Process.Pid, metricsAddr, httpAddr)
	} else {
		s.out.printf("devstack", "started %s (pid %d, METRICS_ADDR %s)", svc.Name, cmd.Process.Pid, metricsAddr)
	}
	go func() {
		c.err = cmd.Wait()
		c.out.flush()
		close(c.done)
		exited <- c
	}()
	return c, nil
}

// unexpected is the error of a service that exited while nobody stopped it.
func (c *child) unexpected() error {
	c.reported = true
	if c.err != nil {
		return fmt.Errorf("stack: %s exited unexpectedly: %w", c.name, c.err)
	}
	return fmt.Errorf("stack: %s exited unexpectedly with status 0", c.name)
}

// stopAll sends SIGTERM to every running child, waits up to StopTimeout for
// them, kills those still running and waits for them too. It returns what
// went wrong: a child killed, or one that exited non-zero.
func (s *Stack) stopAll(children []*child) error {
	for _, c := range children {
		select {
		case <-c.done:
			continue
		default:
		}
		s.out.printf("devstack", "stopping %s", c.name)
		if err := terminate(c.cmd.Process); err != nil {
			s.out.printf("devstack", "SIGTERM %s: %v", c.name, err)
		}
	}
	timer := time.NewTimer(s.cfg.StopTimeout)
	defer timer.Stop()
	expired := false
	for _, c := range children {
		if !expired {
			select {
			case <-c.done:
				continue
			case <-timer.C:
				expired = true
			}
		}
		select {
		case <-c.done:
			continue
		default:
		}
		s.out.printf("devstack", "%s did not stop within %s: killing it", c.name, s.cfg.StopTimeout)
		if err := kill(c.cmd.Process); err != nil {
			s.out.printf("devstack", "SIGKILL %s: %v", c.name, err)
		}
		c.killed = true
		<-c.done
	}
	var errs []error
	for _, c := range children {
		switch {
		case c.reported:
		case c.killed:
			errs = append(errs, fmt.Errorf("stack: %s killed after %s", c.name, s.cfg.StopTimeout))
		case c.err != nil:
			errs = append(errs, fmt.Errorf("stack: %s: %w", c.name, c.err))
		default:
			s.out.printf("devstack", "%s stopped", c.name)
		}
	}
	return errors.Join(errs...)
}

// childEnv is base with set applied over it and defaults added where base
// has no value.
func childEnv(base []string, set, defaults map[string]string) []string {
	defaults = maps.Clone(defaults)
	env := slices.DeleteFunc(slices.Clone(base), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		_, ok := set[k]
		if _, isDefault := defaults[k]; isDefault {
			delete(defaults, k)
		}
		return ok
	})
	for _, k := range slices.Sorted(maps.Keys(defaults)) {
		env = append(env, k+"="+defaults[k])
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		env = append(env, k+"="+set[k])
	}
	return env
}

// output writes whole lines from several sources to one writer, each
// prefixed with its source's name.
type output struct {
	mu    sync.Mutex
	w     io.Writer
	width int
}

func newOutput(w io.Writer, names []string) *output {
	o := &output{w: w}
	for _, n := range names {
		o.width = max(o.width, len(n))
	}
	return o
}

func (o *output) line(name string, text []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, _ = fmt.Fprintf(o.w, "%-*s | %s\n", o.width, name, bytes.TrimRight(text, "\r\n"))
}

func (o *output) printf(name, format string, args ...any) {
	o.line(name, fmt.Appendf(nil, format, args...))
}

func (o *output) writer(name string) *lineWriter { return &lineWriter{o: o, name: name} }

// lineWriter is an io.Writer that passes complete lines to its output.
type lineWriter struct {
	o    *output
	name string
	mu   sync.Mutex
	buf  []byte
}

const maxLine = 64 << 10

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) >= maxLine {
				w.o.line(w.name, w.buf)
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.o.line(w.name, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

// flush writes what is left of an unterminated last line.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.o.line(w.name, w.buf)
		w.buf = nil
	}
}

var _ io.Writer = (*lineWriter)(nil)

// writeNew writes content to path unless a file is there already.
func writeNew(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) // #nosec G304 -- a file of the stack's data directory
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
