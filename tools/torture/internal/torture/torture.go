// Package torture is blobref's crash-safety torture run, in the manner of
// Jepsen: the real binaries of ingest, blobwriter and refwriter, two
// replicas each, against nats-server processes (one node, or a three-node
// cluster with R3 streams) and a private Postgres instance, under a steady
// load of uploads over HTTP and by direct event publishing, with
// republishes of earlier events and a few deliberate poison events mixed
// in. Meanwhile it SIGKILLs random service processes at random times,
// restarts them armed with crash failpoints at every step boundary,
// restarts JetStream on the same store (or kills a cluster node and then
// the stream leader) and restarts Postgres (cleanly or by crashing it).
// Then it lets the pipeline settle and checks every invariant of the design
// with package checker.
//
// The services run with settings that make a run converge quickly, not
// production defaults: CONSUMER_ACK_WAIT=5s (a killed worker's messages
// come back within seconds), CONSUMER_BACKOFF_BASE=100ms and
// CONSUMER_BACKOFF_MAX=2s (retries through an outage stay frequent),
// CONSUMER_MAX_DELIVERIES=50 (a crash failpoint costs a delivery, and many
// crashes may hit one message; a retries_exhausted dead letter is still a
// finding the run reports) and INLINE_THRESHOLD=16KiB at ingest (one upload in ten is claim-checked
// through the object store).
//
// The cluster run found that a JetStream API request of blobwriter's claim
// look-up, lost to a node kill, held its batch for the step's whole deadline
// (5m); the look-up now has a deadline of its own. internal/findings keeps
// the reproduction (TestClaimLookupLostReplyStallsBatch).
package torture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/blobwatch"
	"github.com/blobref/blobref/internal/natsproc"
	"github.com/blobref/blobref/internal/pgserver"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/torture/internal/broker"
	"github.com/blobref/blobref/tools/torture/internal/checker"
)

// Config is one run.
type Config struct {
	Seed    int64
	Uploads int // at least this many accepted uploads, HTTP and direct
	// Kills is the least number of service process kills: random SIGKILLs
	// plus crashes at armed failpoints.
	Kills        int
	NATSRestarts int // single node: restarts of the server on its store; cluster: kills of a random node
	LeaderKills  int // cluster only: kills of the UPLOADS stream leader
	PGRestarts   int
	Cluster      bool
	Replicas     int           // processes per service [2]
	Rate         int           // new uploads per second, at most [50]
	ChaosPause   time.Duration // mean pause between chaos steps [1s]
	Settle       time.Duration // how long the pipeline may take to settle [3m]
	Dir          string        // the run's directory (logs, bucket, stores); a new temporary one when ""
	Keep         bool          // keep Dir after the run
	BinDir       string        // holds the built binaries; Dir/bin when ""
	Log          io.Writer     // progress; nowhere when nil
}

func (c *Config) defaults() {
	if c.Replicas <= 0 {
		c.Replicas = 2
	}
	if c.Rate <= 0 {
		c.Rate = 50
	}
	if c.ChaosPause <= 0 {
		c.ChaosPause = time.Second
	}
	if c.Settle <= 0 {
		c.Settle = 3 * time.Minute
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Result is what a run did and what the checker found.
type Result struct {
	Config           Config
	Dir              string
	AcceptedHTTP     int
	AcceptedDirect   int
	Republishes      int
	Poison           int
	HTTPRetries      int
	RandomKills      int
	FailpointCrashes map[string]int
	ServiceStarts    int
	NATSRestarts     int // single node restarts, or random node kills in a cluster
	LeaderKills      int
	PGRestarts       map[string]int // by mode
	UnexpectedExits  []string
	LoadErrors       []string
	Settled          bool
	SettleTime       time.Duration
	Wall             time.Duration
	Report           *checker.Report
}

// Kills is every service process kill: random SIGKILLs and failpoint crashes.
func (r *Result) Kills() int {
	n := r.RandomKills
	for _, c := range r.FailpointCrashes {
		n += c
	}
	return n
}

// Failed lists why the run failed; empty means it passed.
func (r *Result) Failed() []string {
	var out []string
	if r.Report == nil {
		return []string{"no check ran"}
	}
	if v := r.Report.Violations(); v > 0 {
		out = append(out, fmt.Sprintf("%d invariant violations", v))
	}
	if len(r.LoadErrors) > 0 {
		out = append(out, fmt.Sprintf("%d load errors", len(r.LoadErrors)))
	}
	if len(r.UnexpectedExits) > 0 {
		out = append(out, fmt.Sprintf("%d unexpected service exits", len(r.UnexpectedExits)))
	}
	if !r.Settled {
		out = append(out, "did not settle")
	}
	return out
}

var subjects = []string{"users/1/avatar", "users/2/avatar", "users/3/avatar", "docs/a/current", "docs/b/current", "teams/x/logo"}

// Run performs one torture run.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	cfg.defaults()
	began := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 1)) // #nosec G115 G404 -- faults reproducible from the run's seed, no secret
	res = &Result{Config: cfg, PGRestarts: map[string]int{}}

	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "torture-run-"); err != nil {
			return nil, err
		}
	}
	res.Dir = dir
	if !cfg.Keep {
		defer func() {
			if err == nil && len(res.Failed()) == 0 {
				_ = os.RemoveAll(dir)
			}
		}()
	}
	logDir, bucketDir := filepath.Join(dir, "logs"), filepath.Join(dir, "bucket")
	for _, d := range []string{logDir, filepath.Join(bucketDir, "uploads")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, err
		}
	}
	binDir := cfg.BinDir
	if binDir == "" {
		binDir = filepath.Join(dir, "bin")
	}
	logf("building into %s", binDir)
	if err := BuildBinaries(binDir); err != nil {
		return nil, err
	}

	logf("starting private postgres")
	pg, err := pgserver.Start(ctx, pgserver.Config{})
	if err != nil {
		return nil, err
	}
	defer func() {
		_ = copyFile(pg.LogPath(), filepath.Join(logDir, "postgres.log"))
		_ = pg.Stop() // its log, copied above, says what went wrong
	}()
	nodes := 1
	replicas := 1
	if cfg.Cluster {
		nodes, replicas = 3, 3
	}
	logf("starting %d nats-server node(s)", nodes)
	natsBin, err := natsproc.Binary()
	if err != nil {
		return nil, err
	}
	br, err := broker.Start(ctx, natsBin, filepath.Join(dir, "nats"), nodes)
	if err != nil {
		return nil, err
	}
	defer br.Stop()
	nc, err := nats.Connect(br.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = broker.AwaitStreams(sctx, js, replicas)
	cancel()
	if err != nil {
		return nil, err
	}

	common := []string{
		"NATS_URL=" + br.URLs(),
		"DATABASE_URL=" + pg.URL(""),
		"BLOB_URL=file://" + bucketDir,
		fmt.Sprintf("STREAM_REPLICAS=%d", replicas),
		"LOG_LEVEL=info", "LOG_FORMAT=text",
		"CONSUMER_ACK_WAIT=5s", "CONSUMER_BACKOFF_BASE=100ms", "CONSUMER_BACKOFF_MAX=2s",
		"CONSUMER_MAX_DELIVERIES=50", "SHUTDOWN_TIMEOUT=10s",
	}
	fl, err := newFleet(binDir, logDir, cfg.Replicas, common, logf, rand.New(rand.NewPCG(uint64(cfg.Seed), 2))) // #nosec G115 G404 -- faults reproducible from the run's seed, no secret
	if err != nil {
		return nil, err
	}
	if err := fl.run(); err != nil {
		return nil, err
	}
	defer fl.stop()
	if err := fl.awaitReady(2 * time.Minute); err != nil {
		return nil, err
	}

	db, err := pgxpool.New(ctx, pg.URL(""))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if _, err := db.Exec(ctx, checker.AuditDDL); err != nil {
		return nil, fmt.Errorf("install audit trigger: %w", err)
	}
	watch, err := blobwatch.Watch(filepath.Join(bucketDir, "uploads"))
	if err != nil {
		return nil, err
	}
	watchOpen := true
	defer func() {
		if watchOpen {
			_, _ = watch.Close()
		}
	}()

	// Load.
	lctx, stopLoadCtx := context.WithCancel(ctx)
	defer stopLoadCtx()
	tick := time.NewTicker(time.Second / time.Duration(cfg.Rate))
	defer tick.Stop()
	ld := &load{seed: cfg.Seed, subjects: subjects, ingest: fl.ingestAddrs(), js: js, db: db, log: logf,
		limiter: tick.C, direct: map[string]*events.Event{}, poisoned: map[string]bool{}}
	stopLoad := make(chan struct{})
	var lwg sync.WaitGroup
	for w := range 3 {
		lwg.Add(1)
		go func() { defer lwg.Done(); ld.httpWorker(lctx, w, stopLoad) }()
	}
	for w := range 2 {
		lwg.Add(1)
		go func() { defer lwg.Done(); ld.directWorker(lctx, w, stopLoad) }()
	}

	// Chaos.
	logf("load and chaos: %d uploads, %d kills, %d nats restarts, %d leader kills, %d postgres restarts",
		cfg.Uploads, cfg.Kills, cfg.NATSRestarts, cfg.LeaderKills, cfg.PGRestarts)
	fl.arming.Store(true)
	ch := &chaos{cfg: cfg, rng: rng, fleet: fl, broker: br, js: js, pg: pg, replicas: replicas, log: logf, res: res, load: ld}
	chaosErr := ch.run(ctx)
	fl.arming.Store(false)
	for ld.acceptedCount() < cfg.Uploads && ctx.Err() == nil && chaosErr == nil {
		time.Sleep(100 * time.Millisecond)
	}
	close(stopLoad)
	lwg.Wait()
	logf("load done: %d accepted; settling", ld.acceptedCount())
	if chaosErr != nil {
		return res, chaosErr
	}

	// Settle: every accepted upload completed or dead-lettered, every poison
	// dead-lettered, both consumers idle.
	settleStart := time.Now()
	res.Settled = awaitSettled(ctx, js, ld, cfg.Settle, logf)
	res.SettleTime = time.Since(settleStart)
	logf("settled=%v after %v", res.Settled, res.SettleTime.Round(time.Millisecond))

	fl.stop()
	counts, werr := watch.Close()
	watchOpen = false
	if werr != nil {
		return res, werr
	}

	fl.mu.Lock()
	res.RandomKills, res.FailpointCrashes, res.UnexpectedExits, res.ServiceStarts = fl.randomKills, fl.fpCrashes, fl.unexpectedExit, fl.starts
	fl.mu.Unlock()
	ld.mu.Lock()
	accepted := append([]checker.Upload(nil), ld.accepted...)
	poison := append([]checker.Poison(nil), ld.poison...)
	res.Republishes, res.Poison, res.HTTPRetries, res.LoadErrors = ld.republishes, len(ld.poison), ld.httpRetries, ld.errs
	ld.mu.Unlock()
	for _, u := range accepted {
		if u.Via == "http" {
			res.AcceptedHTTP++
		} else {
			res.AcceptedDirect++
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	res.Report, err = checker.Check(cctx, checker.Input{Accepted: accepted, Poison: poison, DB: db, JS: js, BucketDir: bucketDir, Blob: counts})
	res.Wall = time.Since(began)
	return res, err
}

// BuildBinaries builds the three services (with the race detector when
// this binary has it) into dir, unless they are there. nats-server comes
// from natsproc.Binary.
func BuildBinaries(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	missing := false
	for _, s := range []string{"ingest", "blobwriter", "refwriter"} {
		if _, err := os.Stat(filepath.Join(dir, s)); err != nil {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	return testenv.Build(dir, "services/ingest", "services/blobwriter", "services/refwriter")
}

// awaitSettled polls until the pipeline has nothing left to do for the run.
func awaitSettled(ctx context.Context, js jetstream.JetStream, ld *load, within time.Duration, logf func(string, ...any)) bool {
	deadline := time.Now().Add(within)
	lastLog := time.Time{}
	for ctx.Err() == nil {
		open, idle, err := outstanding(ctx, js, ld)
		if err == nil && open == 0 && idle {
			return true
		}
		if time.Now().After(deadline) {
			logf("not settled: %d uploads or poison open, consumers idle %v, err %v", open, idle, err)
			return false
		}
		if time.Since(lastLog) > 5*time.Second {
			logf("settling: %d open, consumers idle %v, err %v", open, idle, err)
			lastLog = time.Now()
		}
		time.Sleep(500 * time.Millisecond)
	}
	return false
}

func outstanding(ctx context.Context, js jetstream.JetStream, ld *load) (open int, idle bool, err error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(qctx, events.StreamName)
	if err != nil {
		return -1, false, err
	}
	info, err := s.Info(qctx, jetstream.WithSubjectFilter(events.CompletedSubject(">")))
	if err != nil {
		return -1, false, err
	}
	dlq, err := js.Stream(qctx, events.DLQStreamName)
	if err != nil {
		return -1, false, err
	}
	dinfo, err := dlq.Info(qctx, jetstream.WithSubjectFilter("dlq.>"))
	if err != nil {
		return -1, false, err
	}
	done := map[string]bool{}
	for subj := range info.State.Subjects {
		done[subj[strings.LastIndexByte(subj, '.')+1:]] = true
	}
	for subj := range dinfo.State.Subjects {
		done[subj[strings.LastIndexByte(subj, '.')+1:]] = true
	}
	ld.mu.Lock()
	for _, u := range ld.accepted {
		if !done[u.ID] {
			open++
		}
	}
	for _, p := range ld.poison {
		if p.Reason == events.ReasonDigestMismatch && !done[p.ID] {
			open++
		}
	}
	ld.mu.Unlock()
	idle = true
	for _, c := range []string{events.BlobWriterConsumer.Durable, events.RefWriterConsumer.Durable} {
		cons, err := s.Consumer(qctx, c)
		if err != nil {
			return open, false, err
		}
		ci, err := cons.Info(qctx)
		if err != nil {
			return open, false, err
		}
		if ci.NumPending > 0 || ci.NumAckPending > 0 {
			idle = false
		}
	}
	return open, idle, nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from) // #nosec G304 -- a log of the run's
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o600) // #nosec G703 -- into the run's own directory
}

// chaos runs the run's kills and restarts, spaced by random pauses.
type chaos struct {
	cfg      Config
	rng      *rand.Rand
	fleet    *fleet
	broker   *broker.Broker
	js       jetstream.JetStream
	pg       *pgserver.Server
	replicas int
	log      func(string, ...any)
	res      *Result
	load     *load
}

func (c *chaos) pause() time.Duration {
	m := int64(c.cfg.ChaosPause)
	return time.Duration(m/2 + c.rng.Int64N(m+1))
}

// run interleaves infrastructure steps (NATS restarts or node kills, leader
// kills, Postgres restarts) with random SIGKILLs of service processes until
// every count of the config is reached and the load has reached its upload
// count.
func (c *chaos) run(ctx context.Context) error {
	var infra []string
	for range c.cfg.NATSRestarts {
		infra = append(infra, "nats")
	}
	for range c.cfg.PGRestarts {
		infra = append(infra, "pg")
	}
	c.rng.Shuffle(len(infra), func(i, j int) { infra[i], infra[j] = infra[j], infra[i] })
	if c.cfg.Cluster {
		for range c.cfg.LeaderKills {
			infra = append(infra, "leader") // after the node kills, as the issue orders them
		}
	}
	// Spread infrastructure steps over the load: one per share of uploads.
	share := c.cfg.Uploads / (len(infra) + 1)
	for step := 0; ctx.Err() == nil; step++ {
		kills := c.fleet.kills()
		accepted := c.load.acceptedCount()
		if kills >= c.cfg.Kills && len(infra) == 0 && accepted >= c.cfg.Uploads {
			return nil
		}
		time.Sleep(c.pause())
		if len(infra) > 0 && accepted >= share*(len(c.res.PGRestarts)+c.res.NATSRestarts+c.res.LeaderKills+1) || len(infra) > 0 && accepted >= c.cfg.Uploads {
			what := infra[0]
			infra = infra[1:]
			if err := c.infra(ctx, what); err != nil {
				return err
			}
			continue
		}
		if kills < c.cfg.Kills {
			c.fleet.killRandom()
		}
	}
	return ctx.Err()
}

func (c *chaos) infra(ctx context.Context, what string) error {
	switch what {
	case "pg":
		mode := "fast"
		if (c.res.PGRestarts["fast"]+c.res.PGRestarts["immediate"])%2 == 0 {
			mode = "immediate"
		}
		c.log("postgres restart -m %s", mode)
		if err := c.pg.Restart(ctx, mode); err != nil {
			return err
		}
		c.res.PGRestarts[mode]++
		return nil
	case "nats", "leader":
		var n *broker.Node
		if what == "leader" {
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			name, err := broker.StreamLeader(lctx, c.js, events.StreamName)
			cancel()
			if err != nil {
				return fmt.Errorf("stream leader: %w", err)
			}
			n = c.broker.Node(name)
			if n == nil {
				return fmt.Errorf("stream leader %q is no node of ours", name)
			}
		} else {
			n = c.broker.Nodes[c.rng.IntN(len(c.broker.Nodes))]
		}
		hard := what == "leader" || c.rng.IntN(2) == 0
		c.log("nats: stopping %s (%s, SIGKILL %v)", n.Name, what, hard)
		c.broker.KillNode(n, hard)
		time.Sleep(c.pause())
		if err := c.broker.StartNode(n); err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := broker.AwaitStreams(actx, c.js, c.replicas)
		cancel()
		if err != nil {
			return fmt.Errorf("after restarting %s: %w", n.Name, err)
		}
		if what == "leader" {
			c.res.LeaderKills++
		} else {
			c.res.NATSRestarts++
		}
		c.log("nats: %s back", n.Name)
		return nil
	}
	return errors.New("unknown chaos step " + what)
}

// Print writes the run's report.
func (r *Result) Print(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	mode := "single node"
	if r.Config.Cluster {
		mode = "3-node cluster, R3 streams"
	}
	rp := r.Report
	p("=== blobref torture run: seed %d, %s, %d replicas per service", r.Config.Seed, mode, r.Config.Replicas)
	p("uploads accepted        %d (http %d, direct %d; http retries %d)", r.AcceptedHTTP+r.AcceptedDirect, r.AcceptedHTTP, r.AcceptedDirect, r.HTTPRetries)
	p("republishes             %d", r.Republishes)
	p("poison events           %d", r.Poison)
	p("process kills           %d (random SIGKILL %d, failpoint crashes %d)", r.Kills(), r.RandomKills, r.Kills()-r.RandomKills)
	if len(r.FailpointCrashes) > 0 {
		keys := make([]string, 0, len(r.FailpointCrashes))
		for k := range r.FailpointCrashes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.FailpointCrashes[k]))
		}
		p("  by failpoint          %s", strings.Join(parts, ", "))
	}
	p("service starts          %d", r.ServiceStarts)
	if r.Config.Cluster {
		p("nats node kills         %d, stream leader kills %d", r.NATSRestarts, r.LeaderKills)
	} else {
		p("nats restarts           %d", r.NATSRestarts)
	}
	p("postgres restarts       %d (fast %d, immediate %d)", r.PGRestarts["fast"]+r.PGRestarts["immediate"], r.PGRestarts["fast"], r.PGRestarts["immediate"])
	if rp != nil {
		p("completed               %d", rp.Completed)
		p("dead letters expected   %s", reasons(rp.ExpectedDead))
		p("dead letters unexpected %d %s", len(rp.Unexpected), unexpectedReasons(rp.Unexpected))
		p("accepted dead-lettered  %s", reasons(rp.DeadAccepted))
		p("lost                    %d", len(rp.Lost))
		p("duplicated blob writes  %d", len(rp.DupBlobWrites))
		p("duplicated ref inserts  %d", len(rp.DupRefInserts))
		p("ref rows rewritten      %d", len(rp.RefRewrites))
		p("objects removed         %d", len(rp.ObjectsRemoved))
		p("dangling references     %d", len(rp.Dangling))
		p("digest mismatches       %d", len(rp.DigestMismatch))
		p("regressions             %d", len(rp.Regressions))
		p("other inconsistencies   %d", len(rp.Inconsistent))
		p("poison not dead-lettered %d", len(rp.PoisonNotDead))
	}
	p("unexpected exits        %d", len(r.UnexpectedExits))
	p("load errors             %d", len(r.LoadErrors))
	p("settled                 %v in %v", r.Settled, r.SettleTime.Round(time.Millisecond))
	p("wall time               %v", r.Wall.Round(time.Millisecond))
	if rp != nil {
		for _, l := range []struct {
			name  string
			items []string
		}{{"lost", rp.Lost}, {"duplicated blob write", rp.DupBlobWrites}, {"duplicated ref insert", rp.DupRefInserts},
			{"ref rewrite", rp.RefRewrites}, {"object removed", rp.ObjectsRemoved}, {"dangling", rp.Dangling},
			{"digest mismatch", rp.DigestMismatch}, {"regression", rp.Regressions}, {"inconsistent", rp.Inconsistent},
			{"poison not dead-lettered", rp.PoisonNotDead}} {
			for i, it := range l.items {
				if i == 20 {
					p("  … %d more", len(l.items)-20)
					break
				}
				p("  %s: %s", l.name, it)
			}
		}
		for i, d := range rp.Unexpected {
			if i == 20 {
				p("  … %d more unexpected dead letters", len(rp.Unexpected)-20)
				break
			}
			p("  unexpected dead letter: %s reason %s step %s completed %v: %s", d.Subject, d.Reason, d.Step, d.Completed, d.Error)
		}
	}
	for _, e := range r.UnexpectedExits {
		p("  unexpected exit: %s", e)
	}
	for i, e := range r.LoadErrors {
		if i == 20 {
			break
		}
		p("  load error: %s", e)
	}
	if f := r.Failed(); len(f) > 0 {
		p("FAILED: %s (run directory %s)", strings.Join(f, "; "), r.Dir)
	} else {
		p("PASSED: lost 0, duplicated 0, dangling 0, regressions 0")
	}
}

func reasons(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func unexpectedReasons(ds []checker.DeadLetter) string {
	m := map[string]int{}
	for _, d := range ds {
		m[d.Reason]++
	}
	if len(m) == 0 {
		return ""
	}
	return "(" + reasons(m) + ")"
}
