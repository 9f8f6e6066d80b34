// Package pipeline runs blobref's whole pipeline for a benchmark: a
// nats-server with JetStream, ingest, blobwriter and refwriter, each a
// process of its own built from this workspace, against a Postgres schema of
// its own and a file:// bucket in a fresh directory. Separate processes let
// a benchmark read each one's memory from /proc.
package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/internal/freeport"
	"github.com/blobref/blobref/internal/release"
)

// The bearer token ingest accepts, and the caller it stands for.
const (
	Token  = "benchZ7q2Xv9Lm4Np8Rt3Wy6Bc1Df5Gh0Jk" // #nosec G101 -- the bench's own token for the ingest it starts on a loopback port
	Caller = "bench"
)

// Config says what the pipeline runs and where.
type Config struct {
	// Binaries are the programs to run (see Build).
	Binaries Binaries
	// Dir is a fresh directory for the JetStream store, the bucket and the
	// logs. The caller creates and removes it.
	Dir string
	// DatabaseURL is the Postgres the pipeline's schema is created in; Stop
	// drops the schema. The services get it as it is, with search_path
	// added: its pgxpool settings (pool_max_conns, ...) reach them.
	DatabaseURL string
	// Env holds KEY=VALUE settings for every service, over the pipeline's
	// own (NATS_URL, DATABASE_URL, BLOB_URL, METRICS_ADDR, HTTP_ADDR,
	// AUTH_TOKENS). Nothing else of the benchmark's environment reaches the
	// services but PATH and HOME: a report states the whole configuration.
	Env []string
	// Services are the services Start starts, in this order (HTTPFloor
	// counts as one); nil means refwriter, blobwriter and ingest. An empty, non-nil slice starts none:
	// nats-server and the schema only (StartServices starts them later).
	Services []string
	// BlobURLs holds the BLOB_URL of a service that must not get the
	// default, file:// over a fresh directory; "" means none (refwriter then
	// gets BLOB_CHECK=false and skips its check of the bucket).
	BlobURLs map[string]string
	// ReadyTimeout bounds the start of each program (default 2m).
	ReadyTimeout time.Duration
	// StopTimeout bounds the graceful stop of each program (default 30s).
	StopTimeout time.Duration
}

// Pipeline is a running pipeline. Stop it with Stop.
type Pipeline struct {
	// NATSURL is nats-server's client URL.
	NATSURL string
	// IngestURL is the base URL of ingest's API, e.g. http://127.0.0.1:41234.
	IngestURL string
	// FloorURL is the base URL of the HTTP accept floor (HTTPFloor).
	FloorURL string
	// ChainURL is the base URL of the latency floor's front (ChainFront).
	ChainURL string
	// DatabaseURL is the URL of the pipeline's database: its search_path is
	// Schema. Each service gets it as ClientURL(its name).
	DatabaseURL string
	// Schema is the Postgres schema of this pipeline.
	Schema string
	// BlobDir is the directory of the file:// bucket.
	BlobDir string
	// NATSVersion and PostgresVersion are the servers' versions.
	NATSVersion, PostgresVersion string

	cfg         Config
	adminURL    string
	procs       []*Process // in start order
	schemaReady bool
	dbURL       *url.URL // DatabaseURL, parsed
	// admin is the connection Backends and Check query on, opened on first
	// use; mu guards it.
	mu    sync.Mutex
	admin *pgx.Conn
}

// Start starts nats-server, creates the schema and starts refwriter,
// blobwriter and ingest, and returns once every service is ready. When it
// fails it stops what it started.
//
// It first has the kernel write out the dirty pages earlier pipelines
// left (their streams' stores and objects, hundreds of MiB after a run of
// 50,000 uploads). Otherwise the kernel's periodic writeback (every 5 s,
// of pages dirty for 30 s) writes them during this pipeline's run, in
// bursts that the Postgres commits of the steps queue behind on a shared
// disk: a stall of 100–300 ms every 5 s, which set the p99 of a paced run.
func Start(ctx context.Context, cfg Config) (_ *Pipeline, err error) {
	writeBack()
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 2 * time.Minute
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	admin, err := adminURL(cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{cfg: cfg, adminURL: admin, BlobDir: filepath.Join(cfg.Dir, "blobs")}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Stop())
		}
	}()
	for _, dir := range []string{p.BlobDir, filepath.Join(cfg.Dir, "nats"), filepath.Join(cfg.Dir, "logs")} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	if err := p.startNATS(rctx); err != nil {
		return nil, err
	}
	if err := p.createSchema(rctx); err != nil {
		return nil, err
	}
	services := cfg.Services
	if services == nil {
		services = []string{RefWriter, BlobWriter, Ingest}
	}
	if err := p.StartServices(rctx, services...); err != nil {
		return nil, err
	}
	return p, nil
}

// StartServices starts services names, in this order, and returns once
// each is ready. A service that fails stays for Stop to stop.
func (p *Pipeline) StartServices(ctx context.Context, names ...string) error {
	from := len(p.procs)
	for _, name := range names {
		if err := p.startService(name); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ReadyTimeout)
	defer cancel()
	for _, pr := range p.procs[from:] {
		if err := pr.awaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// startNATS writes a configuration like deploy/nats/nats.conf's, its
// JetStream limits included (release.NATSMaxMemory and NATSMaxStore), with
// the store in Dir and a free port, starts nats-server and waits until it
// accepts a client.
func (p *Pipeline) startNATS(ctx context.Context) error {
	addr, err := freeport.Addr()
	if err != nil {
		return err
	}
	store := filepath.Join(p.cfg.Dir, "nats")
	conf := filepath.Join(p.cfg.Dir, "nats.conf")
	text := fmt.Sprintf("server_name: blobref-bench\nlisten: %q\nmax_payload: 8MB\njetstream {\n  store_dir: %q\n  max_memory_store: %d\n  max_file_store: %d\n}\n",
		addr, store, release.NATSMaxMemory, release.NATSMaxStore)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	pr, err := startProcess(NATSServer, p.cfg.Binaries.Path(NATSServer), []string{"-c", conf}, baseEnv(), p.logPath(NATSServer))
	if err != nil {
		return err
	}
	p.procs = append(p.procs, pr)
	p.NATSURL = "nats://" + addr
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		nc, err := nats.Connect(p.NATSURL, nats.Timeout(time.Second))
		if err == nil {
			p.NATSVersion = nc.ConnectedServerVersion()
			nc.Close()
			return nil
		}
		if err := pr.Alive(); err != nil {
			return fmt.Errorf("pipeline: while starting, %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pipeline: nats-server not ready: %w: %v\n%s", context.Cause(ctx), err, pr.Tail(20))
		case <-tick.C:
		}
	}
}

// adminURL is raw without the pgxpool settings (pool_*), which a plain
// connection would send to the server as unknown parameters.
func adminURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("pipeline: database URL: %w", err)
	}
	q := u.Query()
	for k := range q {
		if strings.HasPrefix(k, "pool_") {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// createSchema creates a fresh schema and points DatabaseURL's search_path
// at it; the services migrate it as they start.
func (p *Pipeline) createSchema(ctx context.Context) error {
	u, err := url.Parse(p.cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("pipeline: database URL: %w", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	p.Schema = "bench_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, p.adminURL)
	if err != nil {
		return fmt.Errorf("pipeline: postgres at %s is not reachable: %w", u.Redacted(), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var autovacuum string
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version'), current_setting('autovacuum')").Scan(&p.PostgresVersion, &autovacuum); err != nil {
		return fmt.Errorf("pipeline: postgres: %w", err)
	}
	if autovacuum != "on" {
		// Nothing analyzes the pipeline's tables: plans made while they held
		// a few rows stand while they grow (docs/benchmarks.md).
		p.PostgresVersion += " with autovacuum " + autovacuum
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+p.Schema); err != nil {
		return fmt.Errorf("pipeline: create schema: %w", err)
	}
	p.schemaReady = true
	q := u.Query()
	q.Set("search_path", p.Schema)
	u.RawQuery = q.Encode()
	p.DatabaseURL, p.dbURL = u.String(), u
	return nil
}

func (p *Pipeline) dropSchema() error {
	if !p.schemaReady {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.adminURL)
	if err != nil {
		return fmt.Errorf("pipeline: drop schema %s: %w", p.Schema, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA "+p.Schema+" CASCADE"); err != nil {
		return fmt.Errorf("pipeline: drop schema %s: %w", p.Schema, err)
	}
	p.schemaReady = false
	return nil
}

// startService starts service name with the pipeline's settings.
func (p *Pipeline) startService(name string) error {
	metricsAddr, err := freeport.Addr()
	if err != nil {
		return err
	}
	env := append(baseEnv(),
		"NATS_URL="+p.NATSURL,
		"DATABASE_URL="+p.ClientURL(name),
		"METRICS_ADDR="+metricsAddr,
	)
	if role, ok := chainRole(name); ok {
		env = append(env, "FLOOR_ROLE="+role)
	}
	switch name {
	case BlobWriter, RefWriter, ChainStore, ChainRef:
		blobURL, ok := p.cfg.BlobURLs[name]
		switch {
		case !ok:
			env = append(env, "BLOB_URL=file://"+filepath.ToSlash(p.BlobDir))
		case blobURL == "":
			env = append(env, "BLOB_CHECK=false") // refwriter: no bucket to check
		default:
			env = append(env, "BLOB_URL="+blobURL)
		}
	case Ingest:
		httpAddr, err := freeport.Addr()
		if err != nil {
			return err
		}
		p.IngestURL = "http://" + httpAddr
		env = append(env, "HTTP_ADDR="+httpAddr, "AUTH_TOKENS="+Token+"="+Caller)
	case HTTPFloor, ChainFront:
		httpAddr, err := freeport.Addr()
		if err != nil {
			return err
		}
		if name == HTTPFloor {
			p.FloorURL = "http://" + httpAddr
		} else {
			p.ChainURL = "http://" + httpAddr
		}
		env = append(env, "HTTP_ADDR="+httpAddr)
	}
	// exec keeps the last of duplicate keys: Config.Env wins.
	env = append(env, p.cfg.Env...)
	pr, err := startProcess(name, p.cfg.Binaries.Path(name), nil, env, p.logPath(name))
	if err != nil {
		return err
	}
	pr.MetricsAddr = metricsAddr
	p.procs = append(p.procs, pr)
	return nil
}

func (p *Pipeline) logPath(name string) string {
	return filepath.Join(p.cfg.Dir, "logs", name+".log")
}

// baseEnv is what the programs inherit from the benchmark's environment:
// PATH, HOME and the benchmark's temporary directory as TMPDIR, where
// fileblob writes an object before renaming it into the bucket. A floor
// that writes the same objects from the benchmark's process uses the same
// directory, so both pay the same file system's costs.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return append(env, "TMPDIR="+os.TempDir())
}

// Process returns the running program name, or nil.
func (p *Pipeline) Process(name string) *Process {
	for _, pr := range p.procs {
		if pr.Name == name {
			return pr
		}
	}
	return nil
}

// Processes returns the programs in start order: nats-server first.
func (p *Pipeline) Processes() []*Process { return slices.Clone(p.procs) }

// Alive returns an error naming the first program that has exited.
func (p *Pipeline) Alive() error {
	for _, pr := range p.procs {
		if err := pr.Alive(); err != nil {
			return fmt.Errorf("pipeline: %w", err)
		}
	}
	return nil
}

// BlobPath is the file that holds the object of upload id.
func (p *Pipeline) BlobPath(id string) string {
	return filepath.Join(p.BlobDir, "uploads", id)
}

// LogDir is the directory of the programs' logs.
func (p *Pipeline) LogDir() string { return filepath.Join(p.cfg.Dir, "logs") }

// Stop stops the programs in the reverse order of their start (ingest
// first, nats-server last), each with SIGTERM and a grace period, and drops
// the schema. It returns what went wrong: a program that had died or did
// not stop cleanly.
func (p *Pipeline) Stop() error {
	var errs []error
	for i := len(p.procs) - 1; i >= 0; i-- {
		if err := p.procs[i].stop(p.cfg.StopTimeout); err != nil {
			errs = append(errs, fmt.Errorf("pipeline: %w", err))
		}
	}
	p.procs = nil
	p.mu.Lock()
	if p.admin != nil {
		_ = p.admin.Close(context.Background())
		p.admin = nil
	}
	p.mu.Unlock()
	errs = append(errs, p.dropSchema())
	return errors.Join(errs...)
}
