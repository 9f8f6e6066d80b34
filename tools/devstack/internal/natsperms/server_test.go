package natsperms

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/freeport"
	"github.com/blobref/blobref/internal/natsproc"
	"github.com/blobref/blobref/internal/service"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/stepservice"
)

// repoRoot is the directory holding go.work.
var repoRoot = testenv.RepoRoot

// confPath is deploy/nats/nats.conf.
func confPath(t testing.TB) string {
	return filepath.Join(repoRoot(t), "deploy", "nats", "nats.conf")
}

// natsServer is a nats-server process (see natsproc) started from a
// configuration file.
type natsServer struct {
	srv         *natsproc.Server
	monitorPort int
}

// startServer starts a server from the configuration file at path, exactly
// as written, except for what a test must own: it listens on free loopback
// ports (clients and monitoring) and stores JetStream data in a temporary
// directory (the file's one store_dir line is changed to say so). extra, if
// any, is configuration added after the file's. The server reads a copy, in
// a temporary directory with copies of the .conf files beside path, which
// it may include. The test's cleanup stops the server. On failure the test
// shows what the server logged.
func startServer(t testing.TB, path string, extra ...string) *natsServer {
	t.Helper()
	dir := t.TempDir()
	siblings, err := filepath.Glob(filepath.Join(filepath.Dir(path), "*.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range siblings {
		if p != path {
			writeFile(t, filepath.Join(dir, filepath.Base(p)), readFile(t, p))
		}
	}
	conf := readFile(t, path)
	storeDir := regexp.MustCompile(`(?m)^  store_dir: .*$`)
	if n := len(storeDir.FindAllString(conf, -1)); n != 1 {
		t.Fatalf("%s: %d store_dir lines, want 1", path, n)
	}
	conf = storeDir.ReplaceAllLiteralString(conf, "  store_dir: "+strconv.Quote(filepath.Join(dir, "store")))
	copied := filepath.Join(dir, filepath.Base(path))
	writeFile(t, copied, conf+"\n"+strings.Join(extra, "\n")+"\n")
	monitorPort, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsproc.Start(natsproc.Config{ConfigFile: copied, Args: []string{"-m", strconv.Itoa(monitorPort)}})
	if err != nil {
		t.Fatalf("nats-server from %s: %v", path, err)
	}
	t.Cleanup(func() {
		srv.Stop()
		if t.Failed() {
			t.Logf("nats server log:\n%s", srv.Log())
		}
	})
	return &natsServer{srv: srv, monitorPort: monitorPort}
}

// url is the server's client URL.
func (n *natsServer) url() string { return n.srv.URL() }

// monitorURL is the base URL of the server's monitoring endpoint.
func (n *natsServer) monitorURL() string { return fmt.Sprintf("http://127.0.0.1:%d", n.monitorPort) }

// checkNoViolations fails the test if the server logged a permissions
// violation: something a service did was refused.
func (n *natsServer) checkNoViolations(t testing.TB) {
	t.Helper()
	if v := n.violations(); len(v) > 0 {
		t.Errorf("the server refused %d operations, want none:\n%s", len(v), strings.Join(v, "\n"))
	}
}

// violations are the permissions violations the server logged, e.g.
// `[ERR] 127.0.0.1:53068 - cid:7 - … - Publish Violation - Subject "…"`.
func (n *natsServer) violations() []string {
	var v []string
	for line := range strings.Lines(n.srv.Log()) {
		if strings.Contains(line, "[ERR]") && strings.Contains(line, " Violation - ") {
			v = append(v, strings.TrimSpace(line))
		}
	}
	return v
}

// client is a connection of one NATS user, as a service makes it, that
// records the permissions violations the server reports to it.
type client struct {
	user string
	nc   *nats.Conn
	js   jetstream.JetStream

	mu         sync.Mutex
	violations []string
	reported   chan struct{} // a token when a violation may have arrived
}

// connect connects to the server at url as user with its password and,
// as the services and blobrefctl do, its replies on the inbox prefix of its
// own, _INBOX_<user>; the test's cleanup closes the connection.
func connect(t testing.TB, url, user string, opts ...nats.Option) *client {
	t.Helper()
	c := &client{user: user, reported: make(chan struct{}, 1)}
	opts = append([]nats.Option{
		nats.Name(user),
		nats.UserInfo(user, passwords[user]),
		nats.CustomInboxPrefix(stepservice.DefaultInboxPrefix(user)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if !errors.Is(err, nats.ErrPermissionViolation) {
				return
			}
			c.mu.Lock()
			c.violations = append(c.violations, err.Error())
			c.mu.Unlock()
			select {
			case c.reported <- struct{}{}:
			default:
			}
		}),
	}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	c.js, err = jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return c
}

// reportedViolation reports whether, after the first since reports, the
// server refused this connection "Publish" or "Subscription" to a subject
// that starts with prefix.
func (c *client) reportedViolation(since int, kind, prefix string) bool {
	want := fmt.Sprintf("for %s to %q", kind, prefix)
	want = want[:len(want)-1] // the prefix, without the closing quote
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.violations[since:] {
		if strings.Contains(v, want) {
			return true
		}
	}
	return false
}

// reports is how many violations the server reported so far.
func (c *client) reports() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.violations)
}

// checkNoViolations fails the test if the server refused this connection
// anything.
func (c *client) checkNoViolations(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.violations) > 0 {
		t.Errorf("%s: the server refused %q, want nothing refused", c.user, c.violations)
	}
}

// errSent is what a fire-and-forget op (a core publish or subscribe)
// returns once sent: its refusal comes only as the server's report.
var errSent = errors.New("sent")

// denied runs op as c and expects the server to refuse it: to report a
// permissions violation of kind ("Publish" or "Subscription") on a subject
// starting with prefix. A refused JetStream request gets no answer, so op's
// context is cancelled once the report arrives. An op that succeeds (returns
// nil) fails the test.
func (c *client) denied(t *testing.T, what, kind, prefix string, op func(ctx context.Context) error) {
	t.Helper()
	since := c.reports()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()

	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for !c.reportedViolation(since, kind, prefix) {
		select {
		case <-c.reported:
		case err := <-done:
			done = nil
			if err == nil {
				t.Errorf("%s: %s succeeded, want it refused", c.user, what)
				return
			}
			// Refused requests fail (a timeout, or an error the client
			// derives); the server's report tells why.
		case <-deadline.C:
			t.Errorf("%s: %s: got no permissions violation for %s to %q..., want one", c.user, what, kind, prefix)
			cancel()
			if done != nil {
				<-done
			}
			return
		}
	}
	cancel()
	if done != nil {
		if err := <-done; err == nil {
			t.Errorf("%s: %s succeeded, want it refused", c.user, what)
		}
	}
}

// deniedPub expects a core NATS publish to subject to be refused.
func (c *client) deniedPub(t *testing.T, subject string) {
	t.Helper()
	c.denied(t, "publish "+subject, "Publish", subject, func(context.Context) error {
		if err := c.nc.Publish(subject, []byte("x")); err != nil {
			return err
		}
		if err := c.nc.Flush(); err != nil {
			return err
		}
		return errSent
	})
}

// deniedSub expects a subscription to subject to be refused.
func (c *client) deniedSub(t *testing.T, subject string) {
	t.Helper()
	c.denied(t, "subscribe "+subject, "Subscription", subject, func(context.Context) error {
		sub, err := c.nc.SubscribeSync(subject)
		if err != nil {
			return err
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		if err := c.nc.Flush(); err != nil {
			return err
		}
		return errSent
	})
}

// deniedRequest expects a JetStream API request to subject to be refused.
func (c *client) deniedRequest(t *testing.T, subject, body string) {
	t.Helper()
	c.denied(t, "request "+subject, "Publish", subject, func(ctx context.Context) error {
		_, err := c.nc.RequestWithContext(ctx, subject, []byte(body))
		return err
	})
}

// ensureStreams does what a service does at start-up with NATS_SETUP=auto.
func (c *client) ensureStreams(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, c.js, events.StreamOptions{}); err != nil {
		t.Fatalf("%s: EnsureStreams: %v", c.user, err)
	}
}

// setUp does what `blobrefctl setup` does, as user setup: it creates the
// streams, the staging bucket and both durable consumers, these for step
// runners with options o, as the services with NATS_SETUP=off look them up.
func setUp(t testing.TB, url string, o step.Options, opts ...nats.Option) *client {
	t.Helper()
	s := connect(t, url, setup, opts...)
	cfg := setupConfig(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if done, err := service.Setup(ctx, s.js, cfg); err != nil {
		t.Fatalf("setup: %v (did %q)", err, done)
	}
	s.checkNoViolations(t)
	return s
}

// setupConfig is blobrefctl setup's configuration by default, for step
// runners with options o.
func setupConfig(t testing.TB, o step.Options) *service.SetupConfig {
	t.Helper()
	cfg := &service.SetupConfig{}
	if err := stepservice.Load(cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.StagingBucket != stagingBucket {
		t.Fatalf("STAGING_BUCKET by default: got %q, want %q (nats.conf's)", cfg.StagingBucket, stagingBucket)
	}
	if o.AckWait > 0 {
		cfg.AckWait = o.AckWait
	}
	if o.MaxInFlight > 0 {
		cfg.MaxInFlight = o.MaxInFlight
	}
	return cfg
}
