// Package throughput measures blobref's pipeline as issue 6 asks: the real
// services (blobwriter and refwriter, each its own process) on a nats-server
// of their own and the machine's Postgres, fed request events by a producer
// as fast as JetStream accepts them, with a file:// bucket and with mem://;
// the floors of each stage alone (package floors), measured in rounds
// interleaved with the pipeline's runs and held against the stage's cost in
// the same round, and the ceiling they put on the machine; a paced load at
// half the maximum rate, and floor (p) at that pace; the republish path and the ceiling floors (a′)
// and (d) put on it; and the services' memory under
// a backlog of pending requests. After each run a sample of the uploads is
// checked whole (rows and objects), not only their completed events.
//
// Run measures and returns a Report; the throughput command prints it.
package throughput

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
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/bench/internal/floors"
	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/machine"
	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"
	"github.com/blobref/blobref/bench/internal/stats"
	"github.com/blobref/blobref/pkg/events"
)

// Bucket configurations.
const (
	File = "file"
	Mem  = "mem"
)

// Names of the processes whose CPU a pipeline run reads.
const (
	BlobWriter = pipeline.BlobWriter
	RefWriter  = pipeline.RefWriter
	NATSServer = pipeline.NATSServer
	Postgres   = pipeline.Postgres
	Bench      = pipeline.Bench
)

// Processes are the processes of a pipeline run, in the report's order.
var Processes = []string{BlobWriter, RefWriter, NATSServer, Postgres, Bench}

// Config is what Run measures and how.
type Config struct {
	// Uploads is the number of uploads of each measured run (and of each
	// floor).
	Uploads int
	// Size is the size of each upload in bytes.
	Size int
	// Runs is how many rounds run: each measures the floors, then runs
	// each configuration once.
	Runs int
	// Configs are the bucket configurations to run: File, Mem.
	Configs []string
	// Floors, Paced and Republish turn those measurements on.
	Floors, Paced, Republish bool
	// Backlog is the number of pending request events of the memory phase;
	// 0 skips it. BacklogDuration is how long it watches the services.
	Backlog         int
	BacklogDuration time.Duration
	// Warmup uploads go through each pipeline, unmeasured, before its run.
	Warmup int
	// Check is how many uploads of each run are checked whole afterwards.
	Check int
	// Window is the producer's window of unacknowledged publishes.
	Window int
	// Concurrency is the services' CONSUMER_CONCURRENCY, which the bucket
	// and Postgres floors use too.
	Concurrency int
	// Batch is the uploads per transaction of the Postgres floor, and the
	// messages per pull of the JetStream floor.
	Batch int
	// DatabaseURL is the Postgres each run gets a fresh schema in.
	DatabaseURL string
	// ServicesDir, when set, holds prebuilt blobwriter and refwriter
	// binaries to measure instead of building them from this tree.
	ServicesDir string
	// Env holds KEY=VALUE settings for the services over their defaults.
	Env []string
	// WorkDir is where each run gets a fresh directory. Nothing is deleted.
	WorkDir string
	// Command is the command line the report names.
	Command string
	// Progress receives a line as each step starts (nil: none).
	Progress io.Writer
}

// Validate names each bad setting.
func (c *Config) Validate() error {
	var errs []error
	if c.Uploads < 1 || c.Size < 1 || c.Runs < 1 {
		errs = append(errs, errors.New("uploads, size and runs must be positive"))
	}
	for _, name := range c.Configs {
		if name != File && name != Mem {
			errs = append(errs, fmt.Errorf("config %q is neither %s nor %s", name, File, Mem))
		}
	}
	if len(c.Configs) == 0 && !c.Floors && c.Backlog == 0 {
		errs = append(errs, errors.New("nothing to measure: no configs, no floors, no backlog"))
	}
	if c.Backlog < 0 || c.Backlog > 0 && c.BacklogDuration <= 0 {
		errs = append(errs, errors.New("the backlog must not be negative, and its duration must be positive"))
	}
	if c.Window < 1 || c.Concurrency < 1 || c.Batch < 1 || c.Warmup < 0 || c.Check < 0 {
		errs = append(errs, errors.New("window, concurrency and batch must be positive, warm-up and check not negative"))
	}
	if c.DatabaseURL == "" || c.WorkDir == "" {
		errs = append(errs, errors.New("a database URL and a work directory are required"))
	}
	return errors.Join(errs...)
}

// Phase is one measured publication of a set of uploads through a
// pipeline: its rate and latencies, and the CPU every process used.
type Phase = load.Phase

// RunResult is one measured run of a configuration.
type RunResult struct {
	Phase
	// Peak is each service's peak RSS (VmHWM) during the run.
	Peak map[string]int64
	// Republish is the same requests published again once they completed.
	Republish *Phase
	// Checked is what the check after the run looked at.
	Checked pipeline.Checked
	// Legs are where its uploads' time went, by consumer (paced runs only).
	Legs load.Legs
}

// PacedFloorRun is one run of floor (p) and where its uploads' time went.
type PacedFloorRun struct {
	floors.Result
	Legs load.Legs
}

// ConfigResult is every run of one bucket configuration.
type ConfigResult struct {
	Name string
	// BlobURLs are the services' BLOB_URLs.
	BlobURLs map[string]string
	Runs     []RunResult
	// Paced are the runs at PacedRate uploads/s (half the median rate),
	// one per round.
	Paced     []RunResult
	PacedRate float64
	// PacedFloor is floor (p) at PacedRate, one per round, each next to
	// that round's paced run: the pipeline's durable writes at the same
	// pace with none of its machinery, the least latency the disk allows
	// at that rate.
	PacedFloor []PacedFloorRun
	// Err is why the configuration could not be measured.
	Err error
}

// FloorResults are the floors' runs, one per round.
type FloorResults struct {
	JetStream []floors.Result
	// JetStreamAgain is floor (a) run again on its own stream once its
	// first pass is over (floors.JetStreamResults.Again), when the rounds
	// republish: floor (a′), what JetStream carries at most in a republish.
	JetStreamAgain []floors.Result
	// Bucket is floor (b) per configuration.
	Bucket   map[string][]floors.Result
	Postgres []floors.Result
	// Lookups is floor (d), the markers of floor (c) read back: with floor
	// (a′), what a republished request costs at least.
	Lookups []floors.Result
}

// BacklogResult is the memory phase.
type BacklogResult struct {
	Pending  int
	Duration time.Duration
	// Completed is how many uploads completed while it watched; Left how
	// many requests blobwriter's consumer still had pending at the end.
	Completed int
	Left      uint64
	// Ready is each service's RSS once ready; Max the largest RSS sampled
	// (every 500ms); Peak its VmHWM at the end; End its RSS at the end.
	Ready, Max, Peak, End map[string]int64
	// PublishRate is how fast the backlog went into JetStream.
	PublishRate float64
}

// Report is everything Run measured, and where.
type Report struct {
	Config                       Config
	Machine                      machine.Info
	GoVersion, Source            string
	GoFlags                      string // GOFLAGS the services were built with (-tags leaving drivers out, say)
	NATSVersion, PostgresVersion string
	Dir                          string
	TempDir                      string // the services' and the floors' TMPDIR
	Floors                       *FloorResults
	Configs                      []ConfigResult
	Backlog                      *BacklogResult
	Started                      time.Time
	Wall                         time.Duration
}

// bench is one Run's world.
type bench struct {
	cfg      Config
	rep      *Report
	bins     pipeline.Binaries
	runs     int // directories handed out
	token    string
	progress func(string, ...any)
}

// Run builds the programs and measures what cfg asks for. It returns the
// report of what it measured, with an error also what it measured before
// the failure. A configuration that fails is reported with its error and
// the others still run.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("throughput: %w", err)
	}
	var tok [4]byte
	_, _ = rand.Read(tok[:])
	b := &bench{cfg: cfg, token: hex.EncodeToString(tok[:])}
	b.progress = func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "throughput: "+format+"\n", args...)
		}
	}
	rep := &Report{Config: cfg, Machine: machine.Describe(), Started: time.Now(), TempDir: os.TempDir()}
	b.rep = rep
	defer func() { rep.Wall = time.Since(rep.Started) }()
	rep.Dir = filepath.Join(cfg.WorkDir, time.Now().Format("20060102-150405")+"-"+b.token)
	if err := os.MkdirAll(rep.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("throughput: %w", err)
	}
	b.progress("working in %s (nothing is deleted: remove it when done)", rep.Dir)

	if err := b.build(ctx); err != nil {
		return rep, err
	}
	if cfg.Floors {
		rep.Floors = &FloorResults{Bucket: map[string][]floors.Result{}}
	}
	for _, name := range cfg.Configs {
		rep.Configs = append(rep.Configs, ConfigResult{Name: name, BlobURLs: blobURLs(name)})
	}
	// Rounds: the floors, then each configuration once, so that the floors
	// see the machine (its file system above all) as the runs next to them
	// do.
	for run := 1; run <= cfg.Runs; run++ {
		if cfg.Floors {
			if err := b.floors(ctx, run, rep.Floors); err != nil {
				return rep, err
			}
		}
		for i := range rep.Configs {
			b.run(ctx, run, &rep.Configs[i])
			if ctx.Err() != nil {
				return rep, context.Cause(ctx)
			}
		}
	}
	// The paced rounds, once every configuration's rate is known.
	for run := 1; cfg.Paced && run <= cfg.Runs; run++ {
		for i := range rep.Configs {
			b.paced(ctx, run, &rep.Configs[i])
			if ctx.Err() != nil {
				return rep, context.Cause(ctx)
			}
		}
	}
	if cfg.Backlog > 0 {
		bl, err := b.backlog(ctx)
		rep.Backlog = bl
		if err != nil {
			return rep, err
		}
	}
	for _, c := range rep.Configs {
		if c.Err != nil {
			return rep, fmt.Errorf("throughput: %s://: %w", c.Name, c.Err)
		}
	}
	return rep, nil
}

func (b *bench) build(ctx context.Context) error {
	if b.cfg.ServicesDir == "" {
		b.progress("building nats-server, blobwriter and refwriter")
	} else {
		b.progress("building nats-server; blobwriter and refwriter from %s", b.cfg.ServicesDir)
	}
	bins, err := pipeline.Prepare(ctx, filepath.Join(b.rep.Dir, "bin"), b.cfg.ServicesDir, pipeline.BlobWriter, pipeline.RefWriter)
	if err != nil {
		return err
	}
	b.bins, b.rep.GoVersion, b.rep.Source = bins, bins.GoVersion, bins.Source
	if b.cfg.ServicesDir == "" {
		b.rep.GoFlags = os.Getenv("GOFLAGS")
	}
	return nil
}

// start starts a pipeline in a fresh directory: nats-server, a fresh
// schema and services (none for a floor) with bucket configuration bucket.
func (b *bench) start(ctx context.Context, label, bucket string, services []string) (*pipeline.Pipeline, error) {
	b.runs++
	dir := filepath.Join(b.rep.Dir, fmt.Sprintf("%02d-%s", b.runs, label))
	p, err := pipeline.Start(ctx, pipeline.Config{
		Binaries: b.bins, Dir: dir, DatabaseURL: b.cfg.DatabaseURL, Env: b.cfg.Env,
		Services: services, BlobURLs: blobURLs(bucket),
	})
	if err != nil {
		return nil, err
	}
	b.rep.NATSVersion, b.rep.PostgresVersion = p.NATSVersion, p.PostgresVersion
	return p, nil
}

// blobURLs are the services' BLOB_URLs of a configuration (nil: the
// pipeline's default, file:// over its directory). With mem:// each process
// has a bucket of its own, so refwriter gets none and skips its check.
func blobURLs(bucket string) map[string]string {
	if bucket == Mem {
		return map[string]string{pipeline.BlobWriter: "mem://", pipeline.RefWriter: ""}
	}
	return nil
}

// prefix is a fresh upload id prefix: no two sets of a Run share ids.
func (b *bench) prefix(label string) string {
	b.runs++
	return fmt.Sprintf("%s-%s%d-", b.token, label, b.runs)
}

// floors measures round run of the floors into f, each in a fresh
// nats-server, schema and bucket directory.
func (b *bench) floors(ctx context.Context, run int, f *FloorResults) (err error) {
	set, err := load.NewSet(b.prefix("f"), b.cfg.Uploads, b.cfg.Size, uint64(run)) // #nosec G115 -- a run number, from 0 up
	if err != nil {
		return err
	}
	p, err := b.start(ctx, "floors", File, []string{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, p.Stop()) }()
	nats := p.Process(pipeline.NATSServer)
	b.progress("round %d of %d: floor (a) JetStream", run, b.cfg.Runs)
	js, err := floors.JetStream(ctx, floors.JetStreamOptions{URL: p.NATSURL, PID: nats.PID(), Window: b.cfg.Window, Batch: b.cfg.Batch, Again: b.cfg.Republish}, set)
	if err != nil {
		return err
	}
	f.JetStream = append(f.JetStream, js.First)
	if b.cfg.Republish {
		f.JetStreamAgain = append(f.JetStreamAgain, js.Again)
	}
	for _, name := range b.cfg.Configs {
		b.progress("round %d of %d: floor (b) %s:// bucket", run, b.cfg.Runs, name)
		url := "mem://"
		if name == File {
			url = "file://" + filepath.ToSlash(p.BlobDir)
		}
		r, err := floors.Bucket(ctx, url, b.cfg.Concurrency, set)
		if err != nil {
			return err
		}
		f.Bucket[name] = append(f.Bucket[name], r)
	}
	b.progress("round %d of %d: floor (c) Postgres", run, b.cfg.Runs)
	const label = "floor"
	r, err := floors.Postgres(ctx, p.ClientURL(label), func() ([]int, error) { return p.Backends(label) }, b.cfg.Concurrency, b.cfg.Batch, set)
	if err != nil {
		return err
	}
	f.Postgres = append(f.Postgres, r)
	b.progress("round %d of %d: floor (d) marker look-ups", run, b.cfg.Runs)
	r, err = floors.MarkerLookups(ctx, p.ClientURL(label), func() ([]int, error) { return p.Backends(label) }, b.cfg.Concurrency, b.cfg.Batch, set)
	if err != nil {
		return err
	}
	f.Lookups = append(f.Lookups, r)
	return nil
}

// run measures round run of configuration c, unless an earlier round of
// it failed.
func (b *bench) run(ctx context.Context, run int, c *ConfigResult) {
	if c.Err != nil {
		return
	}
	b.progress("round %d of %d: %s:// pipeline, %d uploads", run, b.cfg.Runs, c.Name, b.cfg.Uploads)
	r, err := b.pipelineRun(ctx, c.Name, 0, b.cfg.Republish)
	if err != nil {
		c.Err = fmt.Errorf("run %d: %w", run, err)
		return
	}
	c.Runs = append(c.Runs, r)
}

// paced measures paced round run of configuration c: a run at half its
// median rate and, if the floors are on, floor (p) at that pace, in this
// order in odd rounds and the other way round in even ones, so that
// neither always meets the disk as the other left it.
func (b *bench) paced(ctx context.Context, run int, c *ConfigResult) {
	if c.Err != nil || len(c.Runs) == 0 {
		return
	}
	if c.PacedRate == 0 {
		c.PacedRate = c.Rate().Median / 2
	}
	pipelineRun := func() error {
		b.progress("paced round %d of %d: %s:// pipeline at %.0f uploads/s", run, b.cfg.Runs, c.Name, c.PacedRate)
		r, err := b.pipelineRun(ctx, c.Name, c.PacedRate, false)
		if err != nil {
			return fmt.Errorf("paced run: %w", err)
		}
		c.Paced = append(c.Paced, r)
		return nil
	}
	floorRun := func() error {
		if !b.cfg.Floors {
			return nil
		}
		b.progress("paced round %d of %d: %s:// floor (p) at %.0f uploads/s", run, b.cfg.Runs, c.Name, c.PacedRate)
		f, err := b.pacedFloor(ctx, c.Name, c.PacedRate)
		if err != nil {
			return fmt.Errorf("floor (p): %w", err)
		}
		c.PacedFloor = append(c.PacedFloor, f)
		return nil
	}
	order := []func() error{pipelineRun, floorRun}
	if run%2 == 0 {
		order[0], order[1] = order[1], order[0]
	}
	for _, f := range order {
		if err := f(); err != nil {
			c.Err = err
			return
		}
	}
}

// pacedFloor measures floor (p) for bucket configuration bucket at rate
// uploads/s, in a fresh nats-server, schema and bucket directory, after the
// same sync as a pipeline's.
func (b *bench) pacedFloor(ctx context.Context, bucket string, rate float64) (_ PacedFloorRun, err error) {
	set, err := load.NewSet(b.prefix("p"), b.cfg.Uploads, b.cfg.Size, uint64(b.runs)) // #nosec G115 -- a count of runs, from 0 up
	if err != nil {
		return PacedFloorRun{}, err
	}
	p, err := b.start(ctx, "paced-floor", bucket, []string{})
	if err != nil {
		return PacedFloorRun{}, err
	}
	defer func() { err = errors.Join(err, p.Stop()) }()
	url := "mem://"
	if bucket == File {
		url = "file://" + filepath.ToSlash(p.BlobDir)
	}
	const label = "floor"
	js, err := floors.JetStream(ctx, floors.JetStreamOptions{
		URL: p.NATSURL, PID: p.Process(pipeline.NATSServer).PID(), Window: b.cfg.Window, Batch: b.cfg.Batch, Rate: rate,
		Work: &floors.StageWork{
			BucketURL: url, DatabaseURL: p.ClientURL(label), Concurrency: b.cfg.Concurrency,
			Backends: func() ([]int, error) { return p.Backends(label) },
		},
	}, set)
	if err != nil {
		return PacedFloorRun{}, err
	}
	legs, err := load.LegsOf(ctx, p.NATSURL, load.PipelineEvents, set.IDs())
	if err != nil {
		return PacedFloorRun{}, err
	}
	return PacedFloorRun{js.First, legs}, nil
}

// Rate summarises the end-to-end rates of the runs.
func (c ConfigResult) Rate() stats.Summary {
	var v []float64
	for _, r := range c.Runs {
		v = append(v, r.Rate())
	}
	return stats.Summarize(v)
}

// pipelineRun starts a pipeline, warms it up, and publishes Uploads
// requests at rate (0: as fast as JetStream accepts), then, with
// republish, the same requests again; then it checks a sample of the
// uploads whole.
func (b *bench) pipelineRun(ctx context.Context, bucket string, rate float64, republish bool) (_ RunResult, err error) {
	p, err := b.start(ctx, bucket, bucket, []string{pipeline.RefWriter, pipeline.BlobWriter})
	if err != nil {
		return RunResult{}, err
	}
	defer func() { err = errors.Join(err, p.Stop()) }()

	pnc, err := nats.Connect(p.NATSURL, nats.Name("bench-producer"))
	if err != nil {
		return RunResult{}, err
	}
	defer pnc.Close()
	tnc, err := nats.Connect(p.NATSURL, nats.Name("bench-tracker"))
	if err != nil {
		return RunResult{}, err
	}
	defer tnc.Close()
	producer, err := load.NewProducer(pnc, b.cfg.Window)
	if err != nil {
		return RunResult{}, err
	}
	tracker, err := load.Track(tnc)
	if err != nil {
		return RunResult{}, err
	}
	defer tracker.Close()
	meter := p.Meter()

	if b.cfg.Warmup > 0 {
		warm, err := load.NewSet(b.prefix("w"), b.cfg.Warmup, b.cfg.Size, 0)
		if err != nil {
			return RunResult{}, err
		}
		if _, err := load.Measure(ctx, producer, tracker, meter, warm, "", 0, p.Alive, nil); err != nil {
			return RunResult{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	set, err := load.NewSet(b.prefix("u"), b.cfg.Uploads, b.cfg.Size, uint64(b.runs)) // #nosec G115 -- a count of runs, from 0 up
	if err != nil {
		return RunResult{}, err
	}
	for _, pr := range p.Processes() {
		if err := procstat.ResetPeak(pr.PID()); err != nil {
			return RunResult{}, fmt.Errorf("%s: %w", pr.Name, err)
		}
	}
	var r RunResult
	if r.Phase, err = load.Measure(ctx, producer, tracker, meter, set, "", rate, p.Alive, nil); err != nil {
		return RunResult{}, err
	}
	r.Peak = map[string]int64{}
	for _, name := range []string{pipeline.BlobWriter, pipeline.RefWriter, pipeline.NATSServer} {
		m, err := procstat.ReadMemory(p.Process(name).PID())
		if err != nil {
			return RunResult{}, fmt.Errorf("%s: %w", name, err)
		}
		r.Peak[name] = m.Peak
	}
	if republish {
		b.progress("%s://: republishing the %d requests", bucket, len(set.Uploads))
		// A fresh tracker: the first one has seen these uploads complete.
		rt, err := load.Track(tnc)
		if err != nil {
			return RunResult{}, err
		}
		defer rt.Close()
		rp, err := load.Measure(ctx, producer, rt, meter, set, "-r1", 0, p.Alive, nil)
		if err != nil {
			return RunResult{}, fmt.Errorf("republish: %w", err)
		}
		r.Republish = &rp
	}
	if r.Checked, err = p.Check(ctx, set.Sample(b.cfg.Check)); err != nil {
		return RunResult{}, err
	}
	if rate > 0 {
		if r.Legs, err = load.LegsOf(ctx, p.NATSURL, load.PipelineEvents, set.IDs()); err != nil {
			return RunResult{}, err
		}
	}
	return r, nil
}

// backlog fills a stream with Backlog pending requests, then starts the
// services and watches their memory for BacklogDuration.
func (b *bench) backlog(ctx context.Context) (_ *BacklogResult, err error) {
	b.progress("backlog: publishing %d pending requests", b.cfg.Backlog)
	p, err := b.start(ctx, "backlog", File, []string{})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, p.Stop()) }()
	nc, err := nats.Connect(p.NATSURL, nats.Name("bench-producer"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	producer, err := load.NewProducer(nc, b.cfg.Window)
	if err != nil {
		return nil, err
	}
	js := producer.JetStream()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		return nil, err
	}
	res := &BacklogResult{Pending: b.cfg.Backlog, Duration: b.cfg.BacklogDuration}
	const chunk = 10000
	start := time.Now()
	for from := 0; from < b.cfg.Backlog; from += chunk {
		set, err := load.NewSet(b.prefix("b"), min(chunk, b.cfg.Backlog-from), b.cfg.Size, uint64(from))
		if err != nil {
			return nil, err
		}
		msgs, err := set.Msgs("")
		if err != nil {
			return nil, err
		}
		if err := producer.Publish(ctx, msgs, nil, 0); err != nil {
			return nil, err
		}
		if from%100000 == 0 && from > 0 {
			b.progress("backlog: %d published", from)
		}
	}
	res.PublishRate = float64(b.cfg.Backlog) / time.Since(start).Seconds()

	var completed atomic.Int64
	sub, err := nc.Subscribe("uploads.completed.>", func(*nats.Msg) { completed.Add(1) })
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe() //nolint:errcheck // closing anyway
	_ = sub.SetPendingLimits(-1, -1)

	b.progress("backlog: starting the services and watching them for %s", b.cfg.BacklogDuration)
	if err := p.StartServices(ctx, pipeline.RefWriter, pipeline.BlobWriter); err != nil {
		return nil, err
	}
	services := []string{pipeline.BlobWriter, pipeline.RefWriter}
	res.Ready, res.Max, res.Peak, res.End = map[string]int64{}, map[string]int64{}, map[string]int64{}, map[string]int64{}
	read := func(into map[string]int64, peak map[string]int64) error {
		for _, name := range services {
			m, err := procstat.ReadMemory(p.Process(name).PID())
			if err != nil {
				return fmt.Errorf("%s: %w", name, errors.Join(err, p.Alive()))
			}
			into[name] = m.RSS
			res.Max[name] = max(res.Max[name], m.RSS)
			if peak != nil {
				peak[name] = m.Peak
			}
		}
		return nil
	}
	if err := read(res.Ready, nil); err != nil {
		return nil, err
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(b.cfg.BacklogDuration)
watch:
	for {
		select {
		case <-tick.C:
			if err := read(res.End, nil); err != nil {
				return nil, err
			}
		case <-deadline:
			break watch
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	if err := read(res.End, res.Peak); err != nil {
		return nil, err
	}
	res.Completed = int(completed.Load())
	cons, err := js.Consumer(ctx, events.StreamName, events.BlobWriterConsumer.Durable)
	if err != nil {
		return res, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return res, err
	}
	res.Left = info.NumPending + uint64(info.NumAckPending) // #nosec G115 -- a count, never negative
	return res, nil
}

// Ceiling is the machine's ceiling in uploads per second when every stage
// shares cores CPUs: cores divided by the sum of the stages' CPU time per
// upload. It is 0 without a positive cost.
func Ceiling(cores int, perUpload ...time.Duration) float64 {
	var sum time.Duration
	for _, d := range perUpload {
		sum += d
	}
	if sum <= 0 {
		return 0
	}
	return float64(cores) / sum.Seconds()
}

// ConcurrencyFrom is the CONSUMER_CONCURRENCY that env sets (the last
// setting wins), or def.
func ConcurrencyFrom(env []string, def int) int {
	n := def
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "CONSUMER_CONCURRENCY="); ok {
			if c, err := strconv.Atoi(v); err == nil && c > 0 {
				n = c
			}
		}
	}
	return n
}
