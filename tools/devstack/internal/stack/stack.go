// Package stack runs blobref's whole pipeline on one machine: an embedded
// JetStream server and the service binaries as child processes, against a
// local Postgres (the machine's, or a private one it runs) and a file://
// bucket. It is what `make run` starts; docs/devstack.md is its manual.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/blobref/blobref/internal/release"
)

// DefaultNATSPort is the port the NATS CLI and the services try first.
const DefaultNATSPort = 4222

// The dev token `make run` gives ingest (AUTH_TOKENS=dev-token=dev unless
// AUTH_TOKENS is set), and the caller it stands for. ingest refuses such a
// weak token unless AUTH_ALLOW_WEAK_TOKENS is true, which the stack sets: it
// runs on a development machine.
const (
	DevToken  = "dev-token"
	DevCaller = "dev"
)

// Service is one service binary the stack runs.
type Service struct {
	// Name is the binary's name in Config.BinDir, e.g. "blobwriter".
	Name string
	// MetricsAddr is the service's METRICS_ADDR. When its port is not 0 the
	// stack waits for /readyz there before it announces that it is ready.
	MetricsAddr string
	// HTTPAddr, if set, is the service's HTTP_ADDR (ingest's API). When its
	// port is taken the service listens on a free port of the same host
	// instead, and the stack says so.
	HTTPAddr string
	// Env holds defaults of the service's environment: Config.Env overrides
	// them.
	Env map[string]string
	// Files are files of the service's own in Config.DataDir, by the
	// variable that names them (a default Config.Env overrides): the stack
	// writes each with its initial content when it is not there yet, and
	// keeps it across runs for the user to edit.
	Files map[string]File
}

// File is a file a service reads from the stack's data directory.
type File struct {
	Name    string // in Config.DataDir
	Content string // written when the file does not exist
}

// NotifierEndpointsFile is the notifier's endpoints file in the data
// directory: no endpoint at first (docs/notifier.md says how to add one).
var NotifierEndpointsFile = File{Name: "notifier-endpoints.json", Content: "{\n  \"endpoints\": []\n}\n"}

// DefaultServices are blobref's services with their usual ports: the
// consumers (the notifier with its endpoints file, reaching receivers on
// this machine too), and ingest with the dev token.
func DefaultServices() []Service {
	return []Service{
		{Name: "blobwriter", MetricsAddr: "127.0.0.1:9101"},
		{Name: "refwriter", MetricsAddr: "127.0.0.1:9102"},
		{
			Name: "notifier", MetricsAddr: "127.0.0.1:9103",
			Env:   map[string]string{"NOTIFIER_ALLOW_PRIVATE": "true"},
			Files: map[string]File{"NOTIFIER_ENDPOINTS_FILE": NotifierEndpointsFile},
		},
		{
			Name: "ingest", MetricsAddr: "127.0.0.1:9100", HTTPAddr: "127.0.0.1:8080",
			Env: map[string]string{"AUTH_TOKENS": DevToken + "=" + DevCaller, "AUTH_ALLOW_WEAK_TOKENS": "true"},
		},
	}
}

// Config says what the stack runs and where.
type Config struct {
	// DataDir holds what the stack keeps across runs: what it remembers
	// (devstack.json), its lock, and its own Postgres's cluster
	// (DataDir/postgres). A second stack on the same DataDir stops at once.
	DataDir string
	// NATSHost and NATSPort are where the JetStream server listens; port 0
	// picks a free one.
	NATSHost string
	NATSPort int
	// NATSPortFallback makes a taken NATSPort fall back to a free port
	// (said in the output) instead of failing. The port NATS got is
	// remembered in DataDir and tried first the next time, so that the
	// NATS_URL a user exported stays right.
	NATSPortFallback bool
	// StoreDir is the JetStream store directory (default DataDir/nats).
	StoreDir string
	// DatabaseURL is the services' DATABASE_URL when the user sets one.
	// Empty: the stack uses a database of its own, Database, on the Postgres
	// at PostgresAddr when something listens there, or else on a private
	// Postgres it runs from the machine's binaries (see openDatabase).
	DatabaseURL string
	// PostgresAddr is the machine's Postgres (DefaultPostgresAddr).
	PostgresAddr string
	// Database is the name of the stack's own database (DefaultDatabase).
	Database string
	// BlobURL is passed to the services as BLOB_URL.
	BlobURL string
	// BinDir holds the service binaries.
	BinDir   string
	Services []Service
	// Env is the environment the services inherit (os.Environ() in main);
	// the stack sets NATS_URL, DATABASE_URL, BLOB_URL and METRICS_ADDR over
	// it, and LOG_FORMAT=text unless Env sets LOG_FORMAT.
	Env []string
	// Out receives the stack's own lines and the services' output, each
	// line prefixed with who wrote it.
	Out io.Writer
	// StopTimeout bounds how long a service may take to exit after SIGTERM
	// before it is killed (default 30s).
	StopTimeout time.Duration
	// ReadyTimeout bounds the wait for the services' /readyz (default 2m).
	ReadyTimeout time.Duration

	// serveNATS starts the JetStream server; nil is the embedded one. The
	// tests that run the real services start nats-server as a process of
	// its own instead, so that their race detector checks devstack and not
	// the server.
	serveNATS func(host string, port int, storeDir string) (jetStreamServer, error)
}

// jetStreamServer is the JetStream server a stack runs.
type jetStreamServer interface {
	ClientURL() string
	// Stop shuts the server down and waits until it has.
	Stop()
}

func (c *Config) validate() error {
	var errs []error
	if c.NATSPort < 0 || c.NATSPort > 65535 {
		errs = append(errs, fmt.Errorf("stack: NATS port %d is out of range", c.NATSPort))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("stack: a data directory is required"))
	}
	if c.BlobURL == "" {
		errs = append(errs, errors.New("stack: BLOB_URL is required"))
	}
	if _, _, err := net.SplitHostPort(c.PostgresAddr); c.DatabaseURL == "" && err != nil {
		errs = append(errs, fmt.Errorf("stack: Postgres address %q is not host:port", c.PostgresAddr))
	}
	if len(c.Services) == 0 {
		errs = append(errs, errors.New("stack: no services to run"))
	}
	for _, svc := range c.Services {
		bin := filepath.Join(c.BinDir, svc.Name)
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
			errs = append(errs, fmt.Errorf("stack: %s not found (run make build, or make run)", bin))
		}
		if _, _, err := net.SplitHostPort(svc.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("stack: %s: metrics address %q is not host:port", svc.Name, svc.MetricsAddr))
		}
		if _, _, err := net.SplitHostPort(svc.HTTPAddr); svc.HTTPAddr != "" && err != nil {
			errs = append(errs, fmt.Errorf("stack: %s: HTTP address %q is not host:port", svc.Name, svc.HTTPAddr))
		}
	}
	return errors.Join(errs...)
}

// Stack is one run of the pipeline. Create it with New and run it once with
// Run.
type Stack struct {
	cfg   Config
	out   *output
	ready chan struct{}

	mu          sync.Mutex
	natsURL     string
	databaseURL string
	pids        []int
	apis        []api    // the HTTP APIs of the services started so far
	metrics     []string // the services' metrics URLs, "name http://addr"
}

// api is a service's HTTP API as it was started.
type api struct {
	service string
	url     string // e.g. http://127.0.0.1:8080
	env     []string
}

// New checks cfg and returns a stack ready to Run.
func New(cfg Config) (*Stack, error) {
	if cfg.NATSHost == "" {
		cfg.NATSHost = "127.0.0.1"
	}
	if cfg.StoreDir == "" && cfg.DataDir != "" {
		cfg.StoreDir = filepath.Join(cfg.DataDir, "nats")
	}
	if cfg.PostgresAddr == "" {
		cfg.PostgresAddr = DefaultPostgresAddr
	}
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 2 * time.Minute
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	names := []string{"devstack", "nats"}
	for _, svc := range cfg.Services {
		names = append(names, svc.Name)
	}
	return &Stack{cfg: cfg, out: newOutput(cfg.Out, names), ready: make(chan struct{})}, nil
}

// Ready is closed once NATS runs and every service is ready.
func (s *Stack) Ready() <-chan struct{} { return s.ready }

// NATSURL is the embedded server's client URL; it is set once NATS runs.
func (s *Stack) NATSURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.natsURL
}

// DatabaseURL is the services' DATABASE_URL; it is set once Postgres is
// there.
func (s *Stack) DatabaseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.databaseURL
}

// HTTPURL is the base URL of service name's HTTP API (HTTP_ADDR), once it
// has started; "" if it has none.
func (s *Stack) HTTPURL(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.apis {
		if a.service == name {
			return a.url
		}
	}
	return ""
}

// PIDs are the process ids of the services started so far.
func (s *Stack) PIDs() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pids)
}

// Run takes the data directory, finds or starts Postgres, starts NATS and
// the services and runs them until ctx is done or a service exits by
// itself. Then it stops the services (SIGTERM, and SIGKILL after
// StopTimeout), shuts NATS down and stops its own Postgres. It returns nil
// after a stop asked for through ctx with every service exiting cleanly.
func (s *Stack) Run(ctx context.Context) (err error) {
	unlock, err := lockDataDir(s.cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := loadState(s.cfg.DataDir)
	if err != nil {
		return err
	}
	db, err := s.openDatabase(ctx, &st)
	if err != nil {
		return err
	}
	if db.stop != nil {
		defer func() {
			if serr := db.stop(); serr != nil {
				err = errors.Join(err, fmt.Errorf("stack: stop Postgres: %w", serr))
				return
			}
			s.out.printf("devstack", "Postgres stopped")
		}()
	}
	s.mu.Lock()
	s.databaseURL = db.url
	s.mu.Unlock()
	s.out.printf("devstack", "Postgres: %s", db.what)

	ns, err := s.startNATS(&st)
	if err != nil {
		return err
	}
	defer func() {
		ns.Stop()
		s.out.printf("devstack", "NATS stopped")
	}()
	if err := st.save(s.cfg.DataDir); err != nil {
		return err
	}

	exited := make(chan *child, len(s.cfg.Services))
	var children []*child
	defer func() { err = errors.Join(err, s.stopAll(children)) }()
	for _, svc := range s.cfg.Services {
		c, err := s.start(svc, exited)
		if err != nil {
			return err
		}
		children = append(children, c)
	}

	if err := s.waitReady(ctx, children, exited); err != nil {
		return err
	}
	if ctx.Err() != nil {
		s.out.printf("devstack", "stopping")
		return nil
	}
	s.announce()
	close(s.ready)

	select {
	case <-ctx.Done():
		s.out.printf("devstack", "stopping")
		return nil
	case c := <-exited:
		return c.unexpected()
	}
}

// startNATS starts the JetStream server on the configured port or, with
// fallback, on the port remembered in st, else the configured one, else a
// free one; st then remembers the port it got.
func (s *Stack) startNATS(st *state) (jetStreamServer, error) {
	port := s.cfg.NATSPort
	switch {
	case port == 0:
		port = server.RANDOM_PORT
	case !s.cfg.NATSPortFallback:
		if err := portFree(s.cfg.NATSHost, port); err != nil {
			return nil, fmt.Errorf("stack: NATS port %d: %w", port, err)
		}
	default:
		candidates := []int{port}
		if st.NATSPort != 0 && st.NATSPort != port {
			candidates = []int{st.NATSPort, port}
		}
		port = server.RANDOM_PORT
		for _, p := range candidates {
			if portFree(s.cfg.NATSHost, p) == nil {
				port = p
				break
			}
		}
		if port == server.RANDOM_PORT {
			s.out.printf("devstack", "%s; NATS listens on a free port instead", takenPorts(candidates))
		}
	}
	if err := os.MkdirAll(s.cfg.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	serve := s.cfg.serveNATS
	if serve == nil {
		serve = s.embeddedNATS
	}
	ns, err := serve(s.cfg.NATSHost, port, s.cfg.StoreDir)
	if err != nil {
		return nil, err
	}
	if u, err := url.Parse(ns.ClientURL()); err == nil && s.cfg.NATSPortFallback {
		if p, err := strconv.Atoi(u.Port()); err == nil {
			if st.NATSPort != 0 && st.NATSPort != p {
				s.out.printf("devstack", "NATS moved from port %d to %d: export NATS_URL again (below)", st.NATSPort, p)
			}
			st.NATSPort = p
		}
	}
	s.mu.Lock()
	s.natsURL = ns.ClientURL()
	s.mu.Unlock()
	s.out.printf("devstack", "NATS with JetStream on %s (store %s)", ns.ClientURL(), s.cfg.StoreDir)
	return ns, nil
}

// takenPorts says that ports are taken: "port 4222 is taken" or "ports
// 4333 and 4222 are taken".
func takenPorts(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	if len(s) == 1 {
		return "port " + s[0] + " is taken"
	}
	return "ports " + strings.Join(s, " and ") + " are taken"
}

// embeddedNATS starts the JetStream server inside devstack.
func (s *Stack) embeddedNATS(host string, port int, storeDir string) (jetStreamServer, error) {
	opts := &server.Options{
		ServerName: "devstack",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		MaxPayload: 8 << 20,
		NoSigs:     true,
		// deploy/nats/nats.conf's limits. Left unset, the file store is
		// three quarters of the disk's free space at start-up, and on a
		// disk with less than 4.4 GiB free the services' streams (3.25 GiB
		// reserved with their defaults) could not be created.
		JetStreamMaxMemory: release.NATSMaxMemory,
		JetStreamMaxStore:  release.NATSMaxStore,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("stack: nats: %w", err)
	}
	ns.SetLoggerV2(natsLogger{s.out}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.New("stack: nats did not start within 15s")
	}
	return embedded{ns}, nil
}

// embedded is the in-process server.
type embedded struct{ *server.Server }

func (e embedded) Stop() {
	e.Shutdown()
	e.WaitForShutdown()
}

// listenAddr is the address svc gets for what ("API", "metrics"): addr,
// or a free port of its host when addr's port is taken, said in the
// output. Port 0 picks a free port when pick0 is set and stays 0
// otherwise (the service then picks its own).
func (s *Stack) listenAddr(svc, what, addr string, pick0 bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if port == "0" && !pick0 {
		return addr, nil
	}
	if port != "0" {
		p, err := strconv.Atoi(port)
		if err != nil {
			return "", fmt.Errorf("stack: %s: %s port %q: %w", svc, what, port, err)
		}
		if portFree(host, p) == nil {
			return addr, nil
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("stack: %s: no free %s port: %w", svc, what, err)
	}
	free := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("stack: %s: %w", svc, err)
	}
	if port != "0" {
		s.out.printf("devstack", "port %s is taken; %s's %s listens on %s instead", port, svc, what, free)
	}
	return free, nil
}

// portFree reports whether host:port can be listened on.
func portFree(host string, port int) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return ln.Close()
}

// waitReady polls each service's /readyz until all answer 200, a service
// exits, ctx is done or ReadyTimeout passes.
func (s *Stack) waitReady(ctx context.Context, children []*child, exited <-chan *child) error {
	var pending []*child
	for _, c := range children {
		if _, port, _ := net.SplitHostPort(c.metricsAddr); port != "0" {
			pending = append(pending, c)
		}
	}
	transport := &http.Transport{DisableKeepAlives: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: time.Second}
	deadline := time.NewTimer(s.cfg.ReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for len(pending) > 0 {
		pending = slices.DeleteFunc(pending, func(c *child) bool {
			if ready(ctx, client, c.metricsAddr) {
				s.out.printf("devstack", "%s is ready (http://%s/readyz)", c.name, dialAddr(c.metricsAddr))
				return true
			}
			return false
		})
		if len(pending) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return nil // Run sees ctx and stops cleanly
		case c := <-exited:
			return c.unexpected()
		case <-deadline.C:
			return fmt.Errorf("stack: %s not ready after %s", pending[0].name, s.cfg.ReadyTimeout)
		case <-tick.C:
		}
	}
	return nil
}

func ready(ctx context.Context, client *http.Client, addr string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+dialAddr(addr)+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// dialAddr turns a listen address such as ":9101" into one to dial.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "" && host != "0.0.0.0" && host != "::" {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// announce tells the user where things are and how to send a first upload.
func (s *Stack) announce() {
	natsURL := s.NATSURL()
	flag := ""
	if natsURL != fmt.Sprintf("nats://127.0.0.1:%d", DefaultNATSPort) {
		flag = " -s " + natsURL
	}
	demo := DemoUpload("demo1", time.Now())
	s.out.printf("devstack", "ready: NATS %s, DATABASE_URL %s, BLOB_URL %s", natsURL, redact(s.DatabaseURL()), redact(s.cfg.BlobURL))
	s.mu.Lock()
	apis, metrics := slices.Clone(s.apis), slices.Clone(s.metrics)
	s.mu.Unlock()
	if len(metrics) > 0 {
		s.out.printf("devstack", "metrics (/metrics, /healthz, /readyz): %s", strings.Join(metrics, ", "))
	}
	s.out.printf("devstack", "for the NATS CLI and blobrefctl in another shell:")
	s.out.printf("devstack", "  export NATS_URL=%s", natsURL)
	nats := "send a first upload with the NATS CLI:"
	for _, a := range apis {
		if a.service != "ingest" {
			continue
		}
		token, which := "$TOKEN", "one of your AUTH_TOKENS" // #nosec G101 -- a placeholder the user fills in
		if v := lookupEnv(a.env, "AUTH_TOKENS"); v == DevToken+"="+DevCaller {
			token, which = DevToken, "the dev token" // #nosec G101 -- the public dev token of a local stack
		}
		s.out.printf("devstack", "ingest's API is on %s; send a first upload over HTTP (%s):", a.url, which)
		s.out.printf("devstack", "  %s", DemoCurl(a.url, token))
		nats = "or with the NATS CLI:"
	}
	s.out.printf("devstack", "%s", nats)
	s.out.printf("devstack", "  %s", demo.Command(natsURL))
	s.out.printf("devstack", "watch it flow: nats%s sub 'uploads.>'   (Ctrl-C stops the stack)", flag)
}

// lookupEnv returns the value of name in env (KEY=VALUE entries).
func lookupEnv(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val
		}
	}
	return v
}

// redact hides the password in a URL or in a key=value DSN.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return dsnPassword.ReplaceAllString(raw, "${1}xxxxx")
}

var dsnPassword = regexp.MustCompile(`(password=)\S+`)

// natsLogger shows the embedded server's warnings and errors; its notices
// would drown the services' output.
type natsLogger struct{ out *output }

func (l natsLogger) Noticef(string, ...any) {}
func (l natsLogger) Debugf(string, ...any)  {}
func (l natsLogger) Tracef(string, ...any)  {}
func (l natsLogger) Warnf(format string, v ...any) {
	l.out.printf("nats", "warning: "+format, v...)
}
func (l natsLogger) Errorf(format string, v ...any) {
	l.out.printf("nats", "error: "+format, v...)
}
func (l natsLogger) Fatalf(format string, v ...any) {
	l.out.printf("nats", "fatal: "+format, v...)
}
