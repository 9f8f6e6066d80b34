// Package ingestbench measures blobref through its HTTP front door, with
// the whole pipeline running as it would in production (package pipeline),
// next to the bulk path behind it (issue 10):
//
//   - the HTTP path: callers that want the reference (Prefer: wait, the
//     same Idempotency-Key again until 200/201) at several numbers of
//     concurrent clients, with uploads/s referenced, latencies, retries and
//     the CPU per upload of every process;
//   - accept only: callers that stop at 202;
//   - the bulk path: request events published straight to JetStream, the
//     CPU per upload the HTTP path is held against;
//   - the HTTP accept floor: the least any front door does for a 202
//     (package acceptfloor, its own process), with accept only's load, and
//     the ceilings it sets on the machine with the bulk path's CPU;
//   - the latency floor: the least a chain of three processes does, one
//     after another, to take an upload from its request to a 201 with the
//     round trips of blobref's path (package chainfloor), at one client,
//     which one client's p50 is held against;
//   - memory: the peak RSS of each program while one large upload streams
//     through it, next to that of a small one.
//
// It measures one or more variants (the services built from this tree, or
// prebuilt elsewhere) in rounds, each round running every variant once, so
// that old and new binaries meet the machine in the same state. After each
// phase a sample of the uploads is checked whole: rows and objects.
//
// Run returns a Report; the pipelinebench command prints it.
package ingestbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/machine"
	"github.com/blobref/blobref/bench/internal/pipeline"
)

// ingestMaxUpload is ingest's default MAX_UPLOAD_SIZE.
const ingestMaxUpload = 1 << 30

// services are the programs a variant provides.
var services = []string{pipeline.Ingest, pipeline.BlobWriter, pipeline.RefWriter}

// deployed is the pipeline as it is deployed, in the order it is started:
// the HTTP phases, the bulk phase and the memory phase run it.
var deployed = []string{pipeline.RefWriter, pipeline.BlobWriter, pipeline.Ingest}

// Config is what a benchmark run measures and how.
type Config struct {
	// Uploads is the number of uploads of each HTTP phase.
	Uploads int
	// Clients are the numbers of concurrent HTTP clients of the HTTP path,
	// one phase each.
	Clients []int
	// AcceptClients is the number of clients of the accept-only phase; 0
	// skips it.
	AcceptClients int
	// BulkUploads is the number of request events of the bulk phase; 0
	// skips it.
	BulkUploads int
	// UploadSize is the size of each upload of those phases, in bytes.
	UploadSize int
	// Wait is the Prefer: wait of the HTTP path, in seconds.
	Wait int
	// Runs is how many rounds run (each runs every variant once); 0 skips
	// them.
	Runs int
	// Warmup uploads go through each round's pipeline, unmeasured, first.
	Warmup int
	// Check is how many uploads of each phase are checked whole.
	Check int
	// Analyze runs ANALYZE on the pipeline's tables before each measured
	// phase of the HTTP path (Pipeline.Analyze), so that its plans are
	// those of a server that has run a while.
	Analyze bool
	// Floor runs the HTTP accept floor (package acceptfloor) in each round,
	// at FloorClients() clients, with the ceilings it sets in the report.
	Floor bool
	// LatencyFloor runs the latency floor (package chainfloor) in each
	// round, at one client, when Clients has 1 (see runsChain).
	LatencyFloor bool
	// LargeSize is the size of the memory phase's large upload; 0 skips the
	// phase.
	LargeSize int64
	// SmallSize is the size of its small upload, which shows the memory that
	// does not depend on the size.
	SmallSize int64
	// ServicesDirs are the variants: each a directory of prebuilt ingest,
	// blobwriter and refwriter, or "" for this tree's. None means this
	// tree's only.
	ServicesDirs []string
	// DatabaseURL is the Postgres each pipeline gets a fresh schema in.
	DatabaseURL string
	// Env holds KEY=VALUE settings for the services over their defaults.
	Env []string
	// Command is the command line the report names.
	Command string
	// RequestTimeout bounds each request (default 1m): a request that gets
	// no answer fails the round instead of hanging it.
	RequestTimeout time.Duration
	// WorkDir is where the run gets a fresh directory. The rounds'
	// directories stay (deleting many files slows the file system down for
	// minutes); the memory phase's, few and large files, are removed unless
	// Keep.
	WorkDir string
	Keep    bool
	// Progress receives a line as each step starts (nil: none).
	Progress io.Writer
}

// Validate names the bad settings.
func (c *Config) Validate() error {
	var errs []error
	if c.Runs < 0 || c.Warmup < 0 || c.Check < 0 || c.AcceptClients < 0 || c.BulkUploads < 0 {
		errs = append(errs, errors.New("runs, warm-up, check, accept clients and bulk uploads must not be negative"))
	}
	if c.Runs > 0 && (c.Uploads < 1 || c.UploadSize < 1 || c.Wait < 1) {
		errs = append(errs, errors.New("uploads, upload size and wait must be positive"))
	}
	for _, n := range c.Clients {
		if n < 1 {
			errs = append(errs, fmt.Errorf("%d clients: want at least 1", n))
		}
	}
	if c.Runs > 0 && len(c.Clients) == 0 && c.AcceptClients == 0 && c.BulkUploads == 0 {
		errs = append(errs, errors.New("rounds without phases: no clients, no accept clients, no bulk uploads"))
	}
	if c.LargeSize < 0 || c.LargeSize > 0 && c.SmallSize < 1 {
		errs = append(errs, errors.New("the large size must not be negative, and the small size must be positive"))
	}
	if c.Runs == 0 && c.LargeSize == 0 {
		errs = append(errs, errors.New("nothing to measure: no runs and no large size"))
	}
	if c.DatabaseURL == "" || c.WorkDir == "" {
		errs = append(errs, errors.New("a database URL and a work directory are required"))
	}
	return errors.Join(errs...)
}

// FloorClients is the floor phase's number of clients: accept only's, or
// the targets' 64 when accept only is skipped.
func (c *Config) FloorClients() int {
	if c.AcceptClients > 0 {
		return c.AcceptClients
	}
	return 64
}

// serviceEnv is Env, after what the benchmark itself needs: its clients
// are one caller, as many as a phase has at once and as fast as ingest
// answers, which ingest's per-caller limits are there to stop.
func (c *Config) serviceEnv() []string {
	env := []string{"CALLER_MAX_CONCURRENT=0", "CALLER_RATE=0"}
	if c.LargeSize > ingestMaxUpload {
		env = append(env, "MAX_UPLOAD_SIZE="+strconv.FormatInt(c.LargeSize, 10), "CALLER_MAX_STAGED_BYTES=0")
	}
	return append(env, c.Env...)
}

// Report is what a benchmark run measured, and where.
type Report struct {
	Config  Config
	Machine machine.Info
	// ServiceEnv is the services' settings beyond their defaults.
	ServiceEnv []string
	// Dir is the run's directory; TempDir the programs' TMPDIR.
	Dir, TempDir string
	// GoVersion built nats-server (and this tree's services).
	GoVersion                    string
	NATSVersion, PostgresVersion string
	Variants                     []*Variant
	Wall                         time.Duration
}

// Variant is one set of services and what was measured of it.
type Variant struct {
	// Name tells the variant apart in the report: "tree", or the base name
	// of its directory.
	Name string
	// Dir is the directory of its prebuilt services, "" for this tree's.
	Dir string
	// Source says what the binaries are.
	Source string
	bins   pipeline.Binaries
	// Memory holds the small upload's run, then the large one's.
	Memory []MemoryRun
	Rounds []Round
	// Checked is what the checks after its phases looked at, together.
	Checked pipeline.Checked
	// Err is why the variant stopped.
	Err error
}

// Round is one round of a variant.
type Round struct {
	// Levels are the HTTP path's phases, one per Config.Clients.
	Levels []Level
	// Accept is the accept-only phase (nil: skipped).
	Accept *Level
	// Bulk is the bulk phase (nil: skipped).
	Bulk *load.Phase
	// BulkBatches are the services' mean batches over the bulk phase, as
	// Level.Batches.
	BulkBatches map[string]float64
	// Floor is the HTTP accept floor's phase (nil: skipped). Its Checked
	// counts rows and JetStream messages.
	Floor *Level
	// Chain is the latency floor's phase (nil: skipped).
	Chain *Level
}

// bench is one Run's world.
type bench struct {
	cfg      Config
	rep      *Report
	token    string
	dirs     int // directories handed out
	progress func(string, ...any)
}

// Run builds the programs and measures what cfg asks for: for each variant
// its memory phase, then the rounds. It returns the report of what it
// measured, with an error also what it measured before the failure; a
// variant that fails stops, and the others go on.
func Run(ctx context.Context, cfg Config) (_ *Report, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ingestbench: %w", err)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = time.Minute
	}
	if len(cfg.ServicesDirs) == 0 {
		cfg.ServicesDirs = []string{""}
	}
	var tok [4]byte
	_, _ = rand.Read(tok[:])
	b := &bench{cfg: cfg, token: hex.EncodeToString(tok[:])}
	b.progress = func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "pipelinebench: "+format+"\n", args...)
		}
	}
	start := time.Now()
	rep := &Report{Config: cfg, Machine: machine.Describe(), ServiceEnv: cfg.serviceEnv(), TempDir: os.TempDir()}
	b.rep = rep
	defer func() { rep.Wall = time.Since(start) }()
	rep.Dir = filepath.Join(cfg.WorkDir, time.Now().Format("20060102-150405")+"-"+b.token)
	if err := os.MkdirAll(rep.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("ingestbench: %w", err)
	}
	b.progress("working in %s (the rounds' directories stay: remove it when done)", rep.Dir)
	if err := b.build(ctx); err != nil {
		return rep, err
	}

	if cfg.LargeSize > 0 {
		for _, v := range rep.Variants {
			if err := b.memoryPhase(ctx, v); err != nil {
				v.Err = fmt.Errorf("memory: %w", err)
			}
		}
	}
	for run := 1; run <= cfg.Runs; run++ {
		// Every other round in reverse, so that no variant always runs
		// right after another.
		order := slices.Clone(rep.Variants)
		if run%2 == 0 {
			slices.Reverse(order)
		}
		for _, v := range order {
			if v.Err != nil {
				continue
			}
			r, err := b.round(ctx, v, run)
			if err != nil {
				v.Err = fmt.Errorf("round %d: %w", run, err)
				continue
			}
			v.Rounds = append(v.Rounds, r)
		}
		if ctx.Err() != nil {
			return rep, context.Cause(ctx)
		}
	}
	var errs []error
	for _, v := range rep.Variants {
		if v.Err != nil {
			errs = append(errs, fmt.Errorf("ingestbench: %s: %w", v.Name, v.Err))
		}
	}
	return rep, errors.Join(errs...)
}

// build prepares each variant's binaries.
func (b *bench) build(ctx context.Context) error {
	var floors []string
	if b.cfg.Floor && b.cfg.Runs > 0 {
		floors = append(floors, pipeline.HTTPFloor)
	}
	if b.cfg.runsChain() && b.cfg.Runs > 0 {
		floors = append(floors, pipeline.ChainFloor)
	}
	var fb pipeline.Binaries
	if len(floors) > 0 {
		b.progress("building %s", strings.Join(floors, " and "))
		var err error
		if fb, err = pipeline.Build(ctx, filepath.Join(b.rep.Dir, "bin-floor"), floors...); err != nil {
			return err
		}
	}
	names := map[string]int{}
	for i, dir := range b.cfg.ServicesDirs {
		v := &Variant{Name: "tree", Dir: dir}
		if dir == "" {
			b.progress("building nats-server, ingest, blobwriter and refwriter")
		} else {
			v.Name = filepath.Base(filepath.Clean(dir))
			b.progress("building nats-server; ingest, blobwriter and refwriter from %s", dir)
		}
		if names[v.Name]++; names[v.Name] > 1 {
			v.Name += "#" + strconv.Itoa(names[v.Name])
		}
		bins, err := pipeline.Prepare(ctx, filepath.Join(b.rep.Dir, fmt.Sprintf("bin-%d", i+1)), dir, services...)
		if err != nil {
			return err
		}
		for _, name := range floors {
			if bins.Paths == nil {
				bins.Paths = map[string]string{}
			}
			bins.Paths[name] = fb.Path(name) // the same floors for every variant
		}
		v.bins, v.Source = bins, bins.Source
		if dir == "" {
			v.Source = "this tree, " + bins.Source
		}
		b.rep.GoVersion = bins.GoVersion
		b.rep.Variants = append(b.rep.Variants, v)
	}
	return nil
}

// start starts a pipeline of variant v in a fresh directory (label names
// it) with services names.
func (b *bench) start(ctx context.Context, v *Variant, label string, names ...string) (*pipeline.Pipeline, error) {
	b.dirs++
	p, err := pipeline.Start(ctx, pipeline.Config{
		Binaries: v.bins, Dir: filepath.Join(b.rep.Dir, fmt.Sprintf("%02d-%s-%s", b.dirs, label, v.Name)),
		DatabaseURL: b.cfg.DatabaseURL, Env: b.rep.ServiceEnv, Services: names,
	})
	if err != nil {
		return nil, err
	}
	b.rep.NATSVersion, b.rep.PostgresVersion = p.NATSVersion, p.PostgresVersion
	return p, nil
}

// settleTimeout bounds the wait for ingest's read model after a phase.
const settleTimeout = time.Minute

// settle waits until ingest's read model on p has folded in what the
// phase left behind, so that the phase's CPU counts it.
func settle(p *pipeline.Pipeline) func(context.Context) error {
	return func(ctx context.Context) error { return p.Settle(ctx, settleTimeout) }
}

// keys is a fresh Idempotency-Key prefix: no two phases of a Run share
// keys, and no other benchmark sharing the database shares them either.
func (b *bench) keys(label string) string {
	b.dirs++
	return fmt.Sprintf("%s-%s%d-", b.token, label, b.dirs)
}
