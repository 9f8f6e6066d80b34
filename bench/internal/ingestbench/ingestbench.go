// Package ingestbench measures blobref through its HTTP front door, with
// the whole pipeline running as it would in production (package pipeline):
//
//   - throughput: how many small uploads per second ingest accepts and the
//     pipeline completes, end to end, with the latencies of both;
//   - memory: the peak RSS of each program while one large upload streams
//     through it, next to that of a small one, to show whether memory
//     depends on the upload's size.
//
// Run builds the programs, runs both phases and returns a Report; the
// pipelinebench command prints it.
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
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/bench/internal/machine"
	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"
)

// TargetPeakRSS is issue 3's target for ingest's and blobwriter's peak RSS
// while an upload of any size passes.
const TargetPeakRSS = 64 << 20

// ingestMaxUpload is ingest's default MAX_UPLOAD_SIZE.
const ingestMaxUpload = 5 << 30

// Config is what a benchmark run measures and how.
type Config struct {
	// Uploads is the number of uploads of a throughput run.
	Uploads int
	// Concurrency is the number of HTTP clients sending them at once.
	Concurrency int
	// UploadSize is the size of each, in bytes.
	UploadSize int
	// Runs is how many times the throughput phase runs; 0 skips it.
	Runs int
	// LargeSize is the size of the memory phase's large upload; 0 skips the
	// phase.
	LargeSize int64
	// SmallSize is the size of its small upload, which shows the memory that
	// does not depend on the size.
	SmallSize int64
	// DatabaseURL is the Postgres the pipeline's schema is created in.
	DatabaseURL string
	// Env holds KEY=VALUE settings for the services over their defaults.
	Env []string
	// Command is the command line the report names.
	Command string
	// RequestTimeout bounds each request of the throughput runs (default
	// 1m): a request that gets no answer fails the run instead of hanging it.
	RequestTimeout time.Duration
	// KeepDir keeps the working directory (binaries, JetStream store,
	// bucket, logs) instead of removing it.
	KeepDir bool
	// Progress receives a line as each step starts (nil: none).
	Progress io.Writer
}

// Validate names the first bad setting.
func (c *Config) Validate() error {
	var errs []error
	if c.Runs < 0 {
		errs = append(errs, errors.New("runs must not be negative"))
	}
	if c.Runs > 0 && (c.Uploads < 1 || c.Concurrency < 1 || c.UploadSize < 1) {
		errs = append(errs, errors.New("uploads, concurrency and upload size must be positive"))
	}
	if c.LargeSize < 0 || c.LargeSize > 0 && c.SmallSize < 1 {
		errs = append(errs, errors.New("the large size must not be negative, and the small size must be positive"))
	}
	if c.Runs == 0 && c.LargeSize == 0 {
		errs = append(errs, errors.New("nothing to measure: no runs and no large size"))
	}
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("a database URL is required"))
	}
	return errors.Join(errs...)
}

// serviceEnv is Env, after what the benchmark itself needs.
func (c *Config) serviceEnv() []string {
	var env []string
	if c.LargeSize > ingestMaxUpload {
		env = append(env, "MAX_UPLOAD_SIZE="+strconv.FormatInt(c.LargeSize, 10))
	}
	return append(env, c.Env...)
}

// Report is what a benchmark run measured, and where.
type Report struct {
	Config  Config
	Machine machine.Info
	// ServiceEnv is the services' settings beyond their defaults.
	ServiceEnv []string
	// GoVersion built the programs; Source is the tree they came from.
	GoVersion, Source            string
	NATSVersion, PostgresVersion string
	Throughput                   []ThroughputRun
	// Memory holds the small upload's run, then the large one's.
	Memory []MemoryRun
}

// programs are the processes whose memory a report shows, in its order.
var programs = []string{pipeline.Ingest, pipeline.BlobWriter, pipeline.RefWriter, pipeline.NATSServer}

// bench is one benchmark run's world.
type bench struct {
	cfg     Config
	pipe    *pipeline.Pipeline
	client  *client
	tracker *tracker
	// keyPrefix starts every Idempotency-Key of this run, so that the
	// upload ids (derived from the keys) are its own: no other benchmark
	// sharing the database, nor a stale service of an earlier one, can hold
	// a claim on them.
	keyPrefix string
}

// Run builds the programs, starts the pipeline, runs the memory phase and
// then the throughput phase, and stops the pipeline. It returns the report
// of what it measured, and with an error also what it measured before the
// failure.
func Run(ctx context.Context, cfg Config) (_ *Report, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ingestbench: %w", err)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = time.Minute
	}
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "pipelinebench: "+format+"\n", args...)
		}
	}
	rep := &Report{Config: cfg, Machine: machine.Describe(), ServiceEnv: cfg.serviceEnv()}

	dir, err := os.MkdirTemp("", "blobref-bench-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if cfg.KeepDir {
			progress("kept %s", dir)
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()

	progress("building nats-server, ingest, blobwriter and refwriter")
	bins, err := pipeline.Build(ctx, filepath.Join(dir, "bin"))
	if err != nil {
		return nil, err
	}
	rep.GoVersion, rep.Source = bins.GoVersion, bins.Source

	progress("starting the pipeline in %s", dir)
	pipe, err := pipeline.Start(ctx, pipeline.Config{
		Binaries: bins, Dir: filepath.Join(dir, "run"), DatabaseURL: cfg.DatabaseURL, Env: rep.ServiceEnv,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		progress("stopping the pipeline")
		if serr := pipe.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	rep.NATSVersion, rep.PostgresVersion = pipe.NATSVersion, pipe.PostgresVersion

	nc, err := nats.Connect(pipe.NATSURL)
	if err != nil {
		return nil, fmt.Errorf("ingestbench: %w", err)
	}
	defer nc.Close()
	tr, err := track(nc)
	if err != nil {
		return nil, fmt.Errorf("ingestbench: %w", err)
	}
	defer tr.close()
	var token [4]byte
	_, _ = rand.Read(token[:])
	b := &bench{
		cfg: cfg, pipe: pipe, client: newClient(pipe.IngestURL, max(cfg.Concurrency, 1)), tracker: tr,
		keyPrefix: hex.EncodeToString(token[:]) + "-",
	}
	defer b.client.close()

	if cfg.LargeSize > 0 {
		progress("memory: a warm-up upload of %s", formatBytes(cfg.SmallSize))
		if _, err := b.memory(ctx, "warm-up", cfg.SmallSize); err != nil {
			return rep, fmt.Errorf("ingestbench: memory: %w", err)
		}
		for i, size := range []int64{cfg.SmallSize, cfg.LargeSize} {
			progress("memory: one upload of %s", formatBytes(size))
			m, err := b.memory(ctx, fmt.Sprintf("memory-%d", i), size)
			if err != nil {
				return rep, fmt.Errorf("ingestbench: memory: %w", err)
			}
			rep.Memory = append(rep.Memory, m)
		}
	}
	for run := 1; run <= cfg.Runs; run++ {
		progress("throughput: run %d of %d, %d uploads of %s", run, cfg.Runs, cfg.Uploads, formatBytes(int64(cfg.UploadSize)))
		t, err := b.throughput(ctx, run)
		if err != nil {
			return rep, fmt.Errorf("ingestbench: throughput run %d: %w", run, err)
		}
		rep.Throughput = append(rep.Throughput, t)
	}
	return rep, nil
}

// resetPeaks resets the peak RSS of every program.
func (b *bench) resetPeaks() error {
	for _, p := range b.pipe.Processes() {
		if err := procstat.ResetPeak(p.PID()); err != nil {
			return fmt.Errorf("%s: %w", p.Name, err)
		}
	}
	return nil
}

// readMemory reads every program's memory, by name.
func (b *bench) readMemory() (map[string]procstat.Memory, error) {
	out := map[string]procstat.Memory{}
	for _, p := range b.pipe.Processes() {
		m, err := procstat.ReadMemory(p.PID())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, errors.Join(err, p.Alive()))
		}
		out[p.Name] = m
	}
	return out, nil
}

// peaks returns every program's peak RSS since resetPeaks, by name.
func (b *bench) peaks() (map[string]int64, error) {
	mem, err := b.readMemory()
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(mem))
	for name, m := range mem {
		out[name] = m.Peak
	}
	return out, nil
}

// formatBytes writes n with the largest binary unit that divides it, or in
// MiB with a fraction.
func formatBytes(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}

// elapsed writes d in seconds, or milliseconds below one second.
func elapsed(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}
