// Package step is blobref's consumer runtime: it runs one side effect for each
// message of a durable JetStream pull consumer, so that a redelivered or
// republished event runs only the steps not yet finished. Another team's
// service adds a side effect to the pipeline with it: a Step declares the
// effect, a Runner runs it (package stepservice makes it a service, package
// steptest tests it against real servers).
//
// The runner works on batches. It pulls messages into a bounded in-flight
// window and groups those that arrive together (up to BatchSize, waiting at
// most BatchWait for a batch to fill, and not at all when nothing more is
// pending); MaxBatches batches run at once, and while they run the next one
// grows. For each batch it does, in order:
//
//	decode → look up the markers and claim the unfinished (one round trip)
//	       → run the side effects (Concurrency at once)
//	       → record their markers and give up their claims (one transaction,
//	         with the step's own writes; one round trip without them)
//	       → publish the events they emit, if any (asynchronously, Nats-Msg-Id
//	         derived from each input) → wait for every PubAck → ack the inputs
//
// So a batch costs the same few round trips whatever its size, and a batch
// of one pays for nothing it does not need.
//
// An input is acked only after JetStream acknowledged the event it caused. A
// step whose marker exists skips its side effect and re-emits its recorded
// result; a step that emits nothing (Emit nil) ends the chain. A transient failure is handed back with NakWithDelay and a growing
// back-off; an invalid or conflicting event, or one that used up its
// deliveries, is published to the dead-letter stream with its reason and
// then terminated. Each message of a batch has its own outcome, and every
// decision between Ack, NakWithDelay and Term is made in one place, settle.
//
// A failure that says a dependency is down or full (see Dependency and
// Unavailable) is an outage, not the message's: the runner stops fetching,
// probes the dependency until it answers, and excuses the deliveries spent
// meanwhile, so that they do not count toward MaxDeliveries.
//
// Recording, publishing and acking run on contexts that shutdown cannot
// cancel, so SIGTERM never falls between a side effect and its marker.
package step

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step/failpoint"
	"github.com/blobref/blobref/pkg/step/internal/marker"
)

// Effect is the side effect of a step: a plain function from the consumed
// event to the result that its marker records.
type Effect[R any] func(ctx context.Context, ev *events.Event) (R, error)

// Item is a side effect done and about to be recorded: the event and the
// result its marker records.
type Item[R any] struct {
	Event  *events.Event
	Result R
}

// Step declares one side effect: what it consumes, the effect itself, and
// what it emits once done.
type Step[R any] struct {
	// Name identifies the step in markers, metrics, logs, failpoints and
	// dead letters.
	Name string
	// Consumes is the event type the step consumes. Its durable consumer
	// reads the type's subjects (events.EventType.Filter): the type must be
	// declared (events.Register) before the runner is made.
	Consumes string
	// Durable names the durable consumer the step reads [Name].
	Durable string
	// Effect performs the side effect of one event. It must be safe to run
	// again after a crash that left it done but unrecorded (deterministic
	// keys, conditional writes). The runner runs several at once.
	Effect Effect[R]
	// InTx, if set, writes what must commit atomically with the markers. It
	// runs in the markers' transaction with the items whose markers this
	// runner inserted, all of a batch at once. It returns nil or one error
	// per item: items with an error are left out (and settled with it) and
	// the transaction runs again without them. Its own error fails the batch.
	InTx func(ctx context.Context, tx pgx.Tx, items []Item[R]) ([]error, error)
	// Emit, if set, builds the event to publish once the step is done, from
	// the consumed event and the recorded result: an event of any declared
	// type (events.Follow builds one). A step without Emit ends the chain.
	Emit func(ev *events.Event, r R) (*events.Event, error)
	// Probes are the step's own dependencies (such as "bucket") by name,
	// each with a probe the runner calls while it is down. The runner
	// probes Postgres and JetStream itself. The Effect names the
	// dependency its errors come from with Dependency or Unavailable.
	Probes map[string]Probe
}

// Consumer is the durable consumer the step reads: Durable (or Name) on the
// subjects of the type it consumes.
func (s Step[R]) Consumer() (events.ConsumerSpec, error) {
	t, ok := events.Lookup(s.Consumes)
	if !ok {
		return events.ConsumerSpec{}, fmt.Errorf("step: step %s consumes %q, which is not a declared event type", s.Name, s.Consumes)
	}
	durable := s.Durable
	if durable == "" {
		durable = s.Name
	}
	return events.ConsumerSpec{Step: s.Name, Consumes: s.Consumes, Durable: durable, FilterSubject: t.Filter()}, nil
}

// Options tune a Runner. A zero field takes its default, which
// DefaultOptions holds (in brackets); package stepservice reads the same
// defaults from the environment (CONSUMER_*).
type Options struct {
	Concurrency   int           // side effects run at once [8]
	BatchSize     int           // most messages handled as one batch [64]
	BatchWait     time.Duration // longest wait for a batch to fill after its first message [2ms]
	StragglerWait time.Duration // longest wait of a batch's finished side effects for its slower ones [1s]
	MaxInFlight   int           // messages fetched and not yet settled [4 × BatchSize]
	AckWait       time.Duration // consumer AckWait [30s]; heartbeats every third of it
	MaxDeliveries int           // deliveries before a message is dead-lettered [20]
	StepTimeout   time.Duration // deadline of one side effect [5m]
	BackoffBase   time.Duration // first retry delay, doubled each delivery [1s]
	BackoffMax    time.Duration // longest retry delay [5m]
	FetchWait     time.Duration // how long one pull waits for messages [2s]
	ShutdownGrace time.Duration // how long in-flight side effects may finish after shutdown starts [20s]
	// ProbeInterval is the first wait before a dependency that is down is
	// probed, doubled after each failed probe up to ProbeMaxInterval [250ms, 5s].
	ProbeInterval    time.Duration
	ProbeMaxInterval time.Duration
	ProbeTimeout     time.Duration // deadline of one probe [2s]
	MaxInlineSize    int           // largest inline data accepted [events.DefaultMaxInlineSize]
	// LookUpConsumer makes the runner look its durable consumer up, and wait
	// until it exists with DurableConfig's settings, instead of creating or
	// updating it: an operator step (blobrefctl setup) creates it, and the
	// service's NATS user needs no right to.
	LookUpConsumer bool
	Logger         *slog.Logger // [slog.Default()]
	Metrics        *Metrics     // [none]
	// OnOutcome, if set, is called with the outcome of every message once it
	// is settled (tests observe the runner with it).
	OnOutcome func(Outcome)
}

// DefaultOptions returns the options a Runner uses for the fields left
// zero: the one set of defaults of the runtime and of the environment it
// is configured from.
func DefaultOptions() Options {
	const batch = 64
	return Options{
		Concurrency:      8,
		BatchSize:        batch,
		BatchWait:        2 * time.Millisecond,
		StragglerWait:    time.Second,
		MaxInFlight:      4 * batch,
		AckWait:          30 * time.Second,
		MaxDeliveries:    20,
		StepTimeout:      5 * time.Minute,
		BackoffBase:      time.Second,
		BackoffMax:       5 * time.Minute,
		FetchWait:        2 * time.Second,
		ShutdownGrace:    20 * time.Second,
		ProbeInterval:    250 * time.Millisecond,
		ProbeMaxInterval: 5 * time.Second,
		ProbeTimeout:     2 * time.Second,
		MaxInlineSize:    events.DefaultMaxInlineSize,
	}
}

func (o *Options) setDefaults() {
	d := DefaultOptions()
	def := func(v *time.Duration, dv time.Duration) {
		if *v <= 0 {
			*v = dv
		}
	}
	defInt := func(n *int, dv int) {
		if *n <= 0 {
			*n = dv
		}
	}
	defInt(&o.Concurrency, d.Concurrency)
	defInt(&o.BatchSize, d.BatchSize)
	defInt(&o.MaxInFlight, 4*o.BatchSize)
	defInt(&o.MaxDeliveries, d.MaxDeliveries)
	defInt(&o.MaxInlineSize, d.MaxInlineSize)
	def(&o.BatchWait, d.BatchWait)
	def(&o.StragglerWait, d.StragglerWait)
	def(&o.AckWait, d.AckWait)
	def(&o.StepTimeout, d.StepTimeout)
	def(&o.BackoffBase, d.BackoffBase)
	def(&o.BackoffMax, d.BackoffMax)
	def(&o.FetchWait, d.FetchWait)
	def(&o.ShutdownGrace, d.ShutdownGrace)
	def(&o.ProbeInterval, d.ProbeInterval)
	def(&o.ProbeMaxInterval, d.ProbeMaxInterval)
	def(&o.ProbeTimeout, d.ProbeTimeout)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// MaxBatches is how many batches run at once: as many as full batches fit
// in the window, at least two (one is fetched and settled while another
// runs) and at most sixteen. Each holds one Postgres connection while it
// runs.
func (o Options) MaxBatches() int {
	o.setDefaults()
	return min(16, max(2, (o.MaxInFlight+o.BatchSize-1)/o.BatchSize))
}

// settleTimeout bounds each of recording, publishing and acking.
const settleTimeout = 10 * time.Second

// Runner runs a Step over its durable consumer.
type Runner[R any] struct {
	step    Step[R]
	spec    events.ConsumerSpec
	js      jetstream.JetStream
	markers *marker.Store
	opts    Options
	effects chan struct{} // one token per side effect running
	batches chan struct{} // one token per batch running
	breaker *breaker
	excuses *excuses
}

// NewRunner returns a Runner of step over JetStream js, keeping the step's
// markers in Postgres pool, whose schema holds the step tables (Migrate). It
// checks the step and fills in the defaults of opts.
func NewRunner[R any](js jetstream.JetStream, pool *pgxpool.Pool, step Step[R], opts Options) (*Runner[R], error) {
	switch {
	case step.Name == "" || step.Effect == nil:
		return nil, errors.New("step: a step needs a Name and an Effect")
	case js == nil || pool == nil:
		return nil, fmt.Errorf("step: step %s needs JetStream and a Postgres pool", step.Name)
	}
	spec, err := step.Consumer()
	if err != nil {
		return nil, err
	}
	opts.setDefaults()
	opts.Metrics.expose(step.Name)
	markers := marker.NewStore(pool)
	r := &Runner[R]{
		step: step, spec: spec, js: js, markers: markers, opts: opts,
		effects: make(chan struct{}, opts.Concurrency),
		batches: make(chan struct{}, opts.MaxBatches()),
		excuses: newExcuses(step.Name, markers, opts),
	}
	probes := map[string]Probe{
		DependencyPostgres: markers.Ping,
		// JetStream answers when it hands over the runner's consumer: its
		// info when an operator step creates it (LookUpConsumer: the one API
		// request a consumer's NATS user may make besides pulls, see
		// deploy/nats/nats.conf), otherwise its (re)creation, which also
		// brings the consumer back should a restart have lost it.
		DependencyJetStream: func(ctx context.Context) error {
			if opts.LookUpConsumer {
				_, err := js.Consumer(ctx, events.StreamName, spec.Durable)
				return err
			}
			_, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, r.ConsumerConfig())
			return err
		},
	}
	for name, p := range step.Probes {
		probes[name] = p
	}
	r.breaker = newBreaker(step.Name, probes, opts)
	return r, nil
}

// Unavailable returns the dependencies the runner found down and has not
// seen back yet, sorted; none while all are up.
func (r *Runner[R]) Unavailable() []string { return r.breaker.unavailable() }

// ConsumerConfig is the durable consumer the runner creates or updates:
// DurableConfig of its step's consumer and its options.
func (r *Runner[R]) ConsumerConfig() jetstream.ConsumerConfig {
	return DurableConfig(r.spec, r.opts)
}

// DurableConfig is the durable consumer spec that runners with options o
// read; blobrefctl setup creates the pipeline's with it. Deliveries are
// unlimited on the server: the runner itself dead-letters a message after
// MaxDeliveries, so nothing is dropped silently, not even a message that
// crashes its worker every time.
func DurableConfig(spec events.ConsumerSpec, o Options) jetstream.ConsumerConfig {
	o.setDefaults()
	return jetstream.ConsumerConfig{
		Durable:       spec.Durable,
		Description:   "blobref step consumer " + spec.Durable,
		FilterSubject: spec.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: max(1000, 4*o.MaxInFlight),
	}
}

// Run consumes until ctx is done, then stops fetching, lets in-flight
// messages finish (or hands them back after ShutdownGrace) and returns.
func (r *Runner[R]) Run(ctx context.Context) error {
	cons, err := r.consumer(ctx)
	if err != nil && ctx.Err() != nil {
		return nil // shut down before starting
	}
	if err != nil {
		return fmt.Errorf("step: %s: consumer: %w", r.step.Name, err)
	}

	// work outlives ctx by ShutdownGrace so that in-flight side effects can
	// finish; recording and acking do not depend on it at all.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopGrace := context.AfterFunc(ctx, func() {
		t := time.NewTimer(r.opts.ShutdownGrace)
		defer t.Stop()
		select {
		case <-t.C:
			cancelWork()
		case <-work.Done():
		}
	})
	defer stopGrace()

	// The breaker's prober and the excuses' writer outlive the batches,
	// which report to them until the last one is settled.
	helpers, stopHelpers := context.WithCancel(context.WithoutCancel(ctx))
	var hwg sync.WaitGroup
	hwg.Add(2)
	go func() { defer hwg.Done(); r.breaker.run(helpers) }()
	go func() {
		defer hwg.Done()
		r.excuses.run(helpers, func() bool { return !r.breaker.isDown(DependencyPostgres) }, r.breaker.changed)
	}()
	defer func() { stopHelpers(); hwg.Wait() }()

	// One slot per message in flight: a pull asks for as many messages as
	// slots are free, so nothing waits in a client buffer while its AckWait
	// runs, and the window, not the backlog, bounds memory.
	slots := make(chan struct{}, r.opts.MaxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		r.breaker.wait(ctx) // nothing is fetched while a dependency is down
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		free := 1
	fill:
		for free < r.opts.MaxInFlight {
			select {
			case slots <- struct{}{}:
				free++
			default:
				break fill
			}
		}
		n, err := r.fetch(ctx, cons, free, slots, &wg, work)
		for ; n < free; n++ {
			<-slots
		}
		if err != nil && ctx.Err() == nil {
			err = Dependency(DependencyJetStream, err)
			if o, ok := classify(err); ok && r.breaker.report(ctx, o, err) {
				continue // the breaker says so, once, and waits for it
			}
			r.opts.Logger.Warn("fetch failed", "step", r.step.Name, "error", err)
			sleep(ctx, time.Second)
		}
	}
	return nil
}

// consumer creates or updates the durable consumer (with LookUpConsumer,
// looks it up, waiting until it exists as DurableConfig describes). A
// JetStream that does not answer in time or has no leader yet (a restart, an
// election) is waited for; an error JetStream answers with, or a permission
// it refuses, is returned: retrying cannot fix a wrong configuration.
func (r *Runner[R]) consumer(ctx context.Context) (jetstream.Consumer, error) {
	delay := 100 * time.Millisecond
	for {
		var cons jetstream.Consumer
		var err error
		if r.opts.LookUpConsumer {
			cons, err = r.js.Consumer(ctx, events.StreamName, r.spec.Durable)
			var problem string
			switch {
			case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
				problem = "not found"
			case err == nil && durableSummary(cons.CachedInfo().Config) != durableSummary(r.ConsumerConfig()):
				problem = "it has " + durableSummary(cons.CachedInfo().Config) + "; this runner wants " +
					durableSummary(r.ConsumerConfig()) + ": run blobrefctl setup with the same CONSUMER_* settings"
			}
			if problem != "" && ctx.Err() == nil {
				r.opts.Logger.Warn("waiting for the durable consumer, which blobrefctl setup creates", "step", r.step.Name,
					"consumer", r.spec.Durable, "problem", problem, "delay", delay)
				sleep(ctx, delay)
				delay = min(2*delay, 5*time.Second)
				continue
			}
		} else {
			cons, err = r.js.CreateOrUpdateConsumer(ctx, events.StreamName, r.ConsumerConfig())
		}
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			return cons, nil
		case ctx.Err() != nil, errors.Is(err, nats.ErrPermissionViolation),
			errors.As(err, &apiErr) && apiErr.Code != http.StatusServiceUnavailable:
			return nil, err
		}
		r.opts.Logger.Warn("consumer not created yet, retrying", "step", r.step.Name, "error", err, "delay", delay)
		sleep(ctx, delay)
		delay = min(2*delay, 5*time.Second)
	}
}

// durableSummary is what a runner needs of its durable consumer's settings.
func durableSummary(c jetstream.ConsumerConfig) string {
	return fmt.Sprintf("filter %s, ack %s, ack wait %s, max deliver %d, max ack pending %d",
		c.FilterSubject, c.AckPolicy, c.AckWait, c.MaxDeliver, c.MaxAckPending)
}

// fetch pulls up to n messages and hands them to batches as they arrive. A
// batch starts with the first message; it is handed to a worker once it
// holds BatchSize messages, or nothing more is pending for the consumer, or
// BatchWait has passed, and a worker is free: at most MaxInFlight/BatchSize
// batches run at once, and while they all run, the next batch grows. So a
// light load goes through in batches of one at once, a moderate one in
// batches of what arrived together, and a heavy one in full batches with no
// wait. fetch returns how many messages it received; each frees its slot
// when settled.
func (r *Runner[R]) fetch(ctx context.Context, cons jetstream.Consumer, n int, slots chan struct{}, wg *sync.WaitGroup, work context.Context) (int, error) {
	fctx, cancel := context.WithTimeout(ctx, r.opts.FetchWait)
	defer cancel()
	pull, err := cons.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		return 0, err
	}
	received := 0
	var (
		batch []*job[R]
		timer *time.Timer
		wait  <-chan time.Time // BatchWait of the batch, until it passed
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for msgs := pull.Messages(); msgs != nil || len(batch) > 0; {
		in, workers := msgs, (chan<- struct{})(nil)
		full := len(batch) >= r.opts.BatchSize
		if full {
			in = nil // wait for a worker
		}
		if len(batch) > 0 && (full || wait == nil || msgs == nil) {
			workers = r.batches
		}
		select {
		case msg, ok := <-in:
			if !ok {
				msgs = nil
				continue
			}
			received++
			j := &job[R]{msg: msg}
			j.meta, j.metaErr = msg.Metadata()
			if r.breaker.paused() {
				r.handBack(j, slots)
				continue
			}
			batch = append(batch, j)
			if len(batch) == 1 {
				if timer == nil {
					timer = time.NewTimer(r.opts.BatchWait)
				} else {
					timer.Reset(r.opts.BatchWait)
				}
				wait = timer.C
			}
			if j.meta != nil && j.meta.NumPending == 0 {
				wait = nil // nothing more to wait for
			}
		case <-wait:
			wait = nil
		case workers <- struct{}{}:
			timer.Stop()
			ready := batch
			batch, wait = nil, nil
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-r.batches }()
				r.handle(ctx, work, ready, slots)
			}()
		}
	}
	if err := pull.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && !errors.Is(err, jetstream.ErrNoHeartbeat) {
		return received, err
	}
	return received, nil
}

// handBack settles a message fetched while a dependency is down without
// running it: it is retried, and its delivery is excused.
func (r *Runner[R]) handBack(j *job[R], slots chan struct{}) {
	start := time.Now()
	r.opts.Metrics.inFlightAdd(r.step.Name, 1)
	j.out = r.received(j)
	dep, _ := r.breaker.excusing()
	j.out.Kind, j.out.Reason, j.out.Outage = Retried, reasonOutage, dep
	j.out.Err = fmt.Errorf("not run: %s is down", dep)
	r.observe(r.settle(j.msg, j.out), start)
	<-slots
}

// received is the outcome of a message before anything happened to it.
func (r *Runner[R]) received(j *job[R]) Outcome {
	out := Outcome{Subject: j.msg.Subject()}
	if j.meta != nil {
		out.Deliveries, out.Stream, out.Sequence = j.meta.NumDelivered, j.meta.Stream, j.meta.Sequence.Stream
	}
	return out
}

// job is one message of a batch on its way through the step.
type job[R any] struct {
	msg     jetstream.Msg
	meta    *jetstream.MsgMetadata
	metaErr error
	ev      *events.Event
	out     Outcome
	over    bool          // out is final: later stages leave the job alone
	marker  marker.Marker // the step's marker, once it exists
	result  R             // the side effect's result, until it is recorded
	next    jetstream.PubAckFuture

	settled atomic.Bool // acked, nakked or dead-lettered
}

// fail makes err the job's final outcome: permanent errors dead-letter the
// message, all others retry it.
func (j *job[R]) fail(err error) {
	j.out, j.over = j.out.fail(err), true
}

// handle processes one batch and settles each of its messages.
func (r *Runner[R]) handle(ctx, work context.Context, jobs []*job[R], slots chan struct{}) {
	start := time.Now()
	r.opts.Metrics.inFlightAdd(r.step.Name, len(jobs))
	if ctx.Err() != nil {
		// Shutting down: hand them back at once.
		for _, j := range jobs {
			j.out = r.received(j)
			j.out.Kind, j.out.Reason = Retried, reasonShutdown
			r.observe(r.settle(j.msg, j.out), start)
			<-slots
		}
		return
	}
	// finish settles jobs whose outcome is final; process calls it for each
	// part of the batch as soon as that part is over.
	finish := func(group []*job[R]) {
		for _, j := range group {
			if j.settled.Load() {
				continue
			}
			r.observe(r.settle(j.msg, j.out), start)
			j.settled.Store(true)
			<-slots
		}
	}
	stop := r.heartbeat(jobs)
	r.process(work, jobs, finish)
	stop()
	finish(jobs) // what a panic left unsettled
}

// heartbeat tells JetStream the messages of jobs not yet settled are still
// being worked on, every third of AckWait, until the returned function is
// called; no heartbeat is sent after it returned. A timer, not a goroutine,
// waits in between: most batches end long before their first heartbeat.
func (r *Runner[R]) heartbeat(jobs []*job[R]) (stop func()) {
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	beat := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		for _, j := range jobs {
			if !j.settled.Load() {
				_ = j.msg.InProgress()
			}
		}
		t.Reset(r.opts.AckWait / 3)
	}
	mu.Lock()
	t = time.AfterFunc(r.opts.AckWait/3, beat)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// process runs the step for a batch and leaves each job's outcome in it,
// handing the jobs to finish as they are over: those it need not run at
// once, the others as their side effects are recorded and their next events
// published. A panic fails every job not yet over as a transient failure,
// for the caller to settle.
func (r *Runner[R]) process(ctx context.Context, jobs []*job[R], finish func([]*job[R])) {
	defer func() {
		if p := recover(); p != nil {
			for _, j := range jobs {
				if !j.over {
					j.out.Kind, j.out.Reason, j.out.Err, j.over = Retried, "panic", fmt.Errorf("panic: %v", p), true
				}
			}
		}
	}()
	r.decode(jobs)
	claims, err := r.claim(ctx, jobs)
	if err != nil {
		failAll(jobs, err)
		return
	}
	var run, ready []*job[R]
	for _, j := range jobs {
		if claims != nil && !j.over && j.out.Kind != Skipped {
			run = append(run, j)
		} else {
			ready = append(ready, j) // failed, busy or finished before
		}
	}
	if claims != nil {
		// Recording a job gives up its claim; the rest (jobs that failed)
		// are given up here, once the batch is over.
		defer claims.Release()
	}
	r.publish(ctx, ready)
	finish(ready)
	if len(run) == 0 {
		return
	}
	r.runEffects(ctx, run, func(group []*job[R]) {
		r.record(ctx, group, claims)
		r.publish(ctx, group)
		finish(group)
	})
}

// decode parses each message; duplicates of an upload within the batch wait
// for a later delivery, when the first copy's marker exists.
func (r *Runner[R]) decode(jobs []*job[R]) {
	seen := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		j.out = r.received(j)
		if j.metaErr != nil {
			j.fail(Permanent(events.ReasonMalformed, fmt.Errorf("not a JetStream message: %w", j.metaErr)))
			continue
		}
		ev, err := events.Decode(j.out.Subject, j.msg.Headers(), j.msg.Data(), events.WithMaxInlineSize(r.opts.MaxInlineSize))
		if err != nil {
			j.fail(err)
			continue
		}
		j.ev, j.out.UploadID = ev, ev.ID
		if ev.Type != r.step.Consumes {
			j.fail(Permanent(events.ReasonUnknownType, fmt.Errorf("step %s does not consume %s", r.step.Name, ev.Type)))
			continue
		}
		if seen[ev.ID] {
			j.out.Kind, j.out.Reason, j.out.Err, j.over = Retried, reasonBusy, errors.New("an earlier copy is in the same batch"), true
			continue
		}
		seen[ev.ID] = true
	}
}

// claim looks up the markers of the batch and takes the claims of the
// uploads whose marker is missing, in one round trip; nil when no job is
// left to look up. A step whose marker exists is skipped. A claim held
// elsewhere retries the job later: that is not a failure and never
// dead-letters it.
func (r *Runner[R]) claim(ctx context.Context, jobs []*job[R]) (*marker.Claims, error) {
	ids := pendingIDs(jobs)
	if len(ids) == 0 {
		return nil, nil
	}
	// Messages at their delivery limit need their excused deliveries: they
	// are read in the same round trip, on the claims' connection.
	var ds []marker.Delivery
	for _, j := range jobs {
		if !j.over && j.out.Deliveries >= uint64(r.opts.MaxDeliveries) {
			d := marker.Delivery{Stream: j.out.Stream, Seq: j.out.Sequence}
			ds = append(ds, d)
			j.out.Excused, j.out.excusedKnown = uint64(r.excuses.unwritten(d)), true // then the written ones
		}
	}
	cctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	claims, err := r.markers.ClaimAndCount(cctx, r.step.Name, ids, ds)
	if err != nil {
		for _, j := range jobs {
			j.out.Excused, j.out.excusedKnown = 0, false // settle reads them, if it must
		}
		return nil, Dependency(DependencyPostgres, err)
	}
	for _, j := range jobs {
		if j.over {
			continue
		}
		if j.out.excusedKnown {
			j.out.Excused += uint64(claims.Excused(marker.Delivery{Stream: j.out.Stream, Seq: j.out.Sequence}))
		}
		switch m, found := claims.Marker(j.out.UploadID); {
		case found:
			j.marker, j.out.Kind = m, Skipped
		case !claims.Held(j.out.UploadID):
			j.out.Kind, j.out.Reason, j.out.Err, j.over = Retried, reasonBusy, marker.ErrBusy, true
		case j.out.Deliveries-min(j.out.Deliveries, j.out.Excused) > uint64(r.opts.MaxDeliveries):
			// Earlier deliveries never settled (a crash each time, say):
			// give up before running it yet again. Deliveries an outage
			// excused do not count.
			j.fail(Permanent(events.ReasonRetriesExhausted,
				fmt.Errorf("delivered %d times (%d excused), the last allowed is %d", j.out.Deliveries, j.out.Excused, r.opts.MaxDeliveries)))
		}
	}
	return claims, nil
}

// runEffects runs the side effects of jobs, Concurrency at once across the
// runner, and hands the jobs to flush in groups as their effects end: all
// of them together when they end within StragglerWait of the start, or of
// the previous group; otherwise those that ended, so that one slow side
// effect (a large upload) does not hold the rest of its batch.
func (r *Runner[R]) runEffects(ctx context.Context, jobs []*job[R], flush func([]*job[R])) {
	ended := make(chan *job[R], len(jobs))
	go func() {
		for _, j := range jobs {
			select {
			case r.effects <- struct{}{}:
			case <-ctx.Done():
				j.fail(ctx.Err())
				ended <- j
				continue
			}
			go func() {
				defer func() { ended <- j }()
				defer func() { <-r.effects }()
				defer func() {
					if p := recover(); p != nil {
						j.out.Kind, j.out.Reason, j.out.Err, j.over = Retried, "panic", fmt.Errorf("panic: %v", p), true
					}
				}()
				r.runEffect(ctx, j)
			}()
		}
	}()
	left := len(jobs)
	defer func() {
		if p := recover(); p != nil {
			for ; left > 0; left-- {
				<-ended // no side effect outlives the batch's handling
			}
			panic(p)
		}
	}()
	t := time.NewTimer(r.opts.StragglerWait)
	defer t.Stop()
	var group []*job[R]
	for left > 0 {
		select {
		case j := <-ended:
			left--
			group = append(group, j)
			if left > 0 {
				continue
			}
		case <-t.C:
			t.Reset(r.opts.StragglerWait)
			if len(group) == 0 {
				continue
			}
		}
		flush(group)
		group = nil
	}
}

func (r *Runner[R]) runEffect(ctx context.Context, j *job[R]) {
	if err := r.inject(ctx, "before-effect"); err != nil {
		j.fail(err)
		return
	}
	ectx, cancel := context.WithTimeout(ctx, r.opts.StepTimeout)
	result, err := r.step.Effect(ectx, j.ev)
	cancel()
	if err != nil {
		j.fail(err)
		return
	}
	r.opts.Metrics.effectDone(r.step.Name)
	j.result = result
	// From here on the side effect is done: nothing may cancel its record.
	if err := r.inject(context.WithoutCancel(ctx), "after-effect"); err != nil {
		j.fail(err)
	}
}

// errItems makes record roll back when InTx refused some items.
var errItems = errors.New("step: items refused")

// record writes the markers of the done jobs, with the step's own writes, in
// one transaction; items the step refuses are settled with their error and
// the transaction is run again without them.
func (r *Runner[R]) record(ctx context.Context, done []*job[R], claims *marker.Claims) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	done = unfinished(done) // a new slice: the caller's stays whole
	for _, j := range done {
		if err := r.inject(rctx, "before-marker"); err != nil {
			j.fail(err)
		}
	}
	for {
		done = unfinished(done)
		if len(done) == 0 {
			return
		}
		ms := make([]marker.Marker, len(done))
		for i, j := range done {
			raw, err := json.Marshal(j.result)
			if err != nil {
				failAll(done, fmt.Errorf("encode result: %w", err))
				return
			}
			ms[i] = marker.Marker{UploadID: j.ev.ID, Step: r.step.Name, Fingerprint: j.ev.SHA256, Result: raw}
		}
		var inTx func(context.Context, pgx.Tx, []int) error
		if r.step.InTx != nil {
			inTx = func(ctx context.Context, tx pgx.Tx, won []int) error {
				if len(won) == 0 {
					return nil
				}
				items := make([]Item[R], len(won))
				for k, i := range won {
					items[k] = Item[R]{Event: done[i].ev, Result: done[i].result}
				}
				errs, err := r.step.InTx(ctx, tx, items)
				if err != nil {
					return err
				}
				refused := false
				for k, err := range errs {
					if err != nil {
						done[won[k]].fail(err)
						refused = true
					}
				}
				if refused {
					return errItems
				}
				return nil
			}
		}
		stored, won, err := claims.Record(rctx, ms, inTx)
		if errors.Is(err, errItems) {
			continue
		}
		if err != nil {
			failAll(done, Dependency(DependencyPostgres, err))
			return
		}
		for i, j := range done {
			j.marker, j.out.Kind = stored[i], Skipped
			if won[i] {
				j.out.Kind = Done
			}
			if err := r.inject(rctx, "after-marker"); err != nil {
				j.fail(err)
			}
		}
		return
	}
}

// publish emits the event of every job whose marker exists, all at once,
// and waits for JetStream to acknowledge each; a step without Emit emits
// nothing.
func (r *Runner[R]) publish(ctx context.Context, jobs []*job[R]) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	for _, j := range jobs {
		if j.over {
			continue
		}
		if j.marker.Fingerprint != j.ev.SHA256 {
			j.fail(Conflict("upload %s was recorded with sha256 %s, this event has %s", j.ev.ID, j.marker.Fingerprint, j.ev.SHA256))
			continue
		}
		var result R
		if err := json.Unmarshal(j.marker.Result, &result); err != nil {
			j.fail(fmt.Errorf("marker %s/%s holds a bad result: %w", j.ev.ID, r.step.Name, err))
			continue
		}
		if r.step.Emit == nil {
			continue // the step ends the chain
		}
		next, err := r.step.Emit(j.ev, result)
		if err != nil {
			j.fail(err)
			continue
		}
		if err := r.inject(pctx, "before-publish"); err != nil {
			j.fail(err)
			continue
		}
		nmsg, err := next.Msg(r.msgID(j.meta))
		if err != nil {
			j.fail(err)
			continue
		}
		if j.next, err = r.js.PublishMsgAsync(nmsg); err != nil {
			j.fail(Dependency(DependencyJetStream, fmt.Errorf("publish %s: %w", nmsg.Subject, err)))
		}
	}
	for _, j := range jobs {
		if j.over || j.next == nil {
			continue
		}
		select {
		case <-j.next.Ok():
		case err := <-j.next.Err():
			j.fail(Dependency(DependencyJetStream, fmt.Errorf("publish %s: %w", j.next.Msg().Subject, err)))
			continue
		case <-pctx.Done():
			j.fail(Dependency(DependencyJetStream, fmt.Errorf("publish %s: no acknowledgement: %w", j.next.Msg().Subject, pctx.Err())))
			continue
		}
		if err := r.inject(pctx, "after-publish"); err != nil {
			j.fail(err)
		}
	}
}

func pendingIDs[R any](jobs []*job[R]) []string {
	ids := make([]string, 0, len(jobs))
	for _, j := range jobs {
		if !j.over {
			ids = append(ids, j.out.UploadID)
		}
	}
	return ids
}

func unfinished[R any](jobs []*job[R]) []*job[R] {
	out := jobs[:0:0]
	for _, j := range jobs {
		if !j.over {
			out = append(out, j)
		}
	}
	return out
}

func failAll[R any](jobs []*job[R], err error) {
	for _, j := range jobs {
		if !j.over {
			j.fail(err)
		}
	}
}

// msgID derives the Nats-Msg-Id of the event emitted for an input message:
// a redelivery of the same message cannot emit twice, while a republished
// input (a new stream sequence) flows on.
func (r *Runner[R]) msgID(meta *jetstream.MsgMetadata) string {
	return events.DerivedMsgID(r.step.Name, meta.Stream, meta.Sequence.Stream)
}

func (r *Runner[R]) inject(ctx context.Context, point string) error {
	return failpoint.Inject(ctx, r.step.Name+"/"+point)
}

// settle is the one place that turns an outcome into Ack, NakWithDelay or
// dead letter + Term. A dead letter that cannot be published is retried
// instead: the message is never terminated without its dead letter. A
// failure that is an outage (see judge) is retried, and its delivery is
// excused; a message is dead-lettered once it used up MaxDeliveries
// deliveries that were not excused.
func (r *Runner[R]) settle(msg jetstream.Msg, out Outcome) Outcome {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	out = r.judge(ctx, out)
	if out.Kind == Retried && out.Outage == "" && out.Reason != reasonBusy && out.Reason != reasonShutdown &&
		out.Deliveries >= uint64(r.opts.MaxDeliveries) {
		switch counted, err := r.counted(ctx, out); {
		case err != nil:
			out.Err = errors.Join(out.Err, err) // not known to be used up: retried
		case counted >= uint64(r.opts.MaxDeliveries):
			out.Kind, out.Reason = Dead, events.ReasonRetriesExhausted
		}
	}
	switch out.Kind {
	case Done, Skipped:
		if err := r.inject(ctx, "before-ack"); err != nil {
			out.Kind, out.Err = Retried, err
			break
		}
		// The event it caused is acknowledged by JetStream already: if this
		// ack is lost, the redelivery finds the marker and re-emits under
		// the same Nats-Msg-Id.
		if err := msg.Ack(); err != nil {
			out.Err = fmt.Errorf("ack: %w", err)
		}
		return out
	case Dead:
		if err := r.deadLetter(ctx, msg, out); err != nil {
			out.Kind, out.Err = Retried, errors.Join(out.Err, err)
			break
		}
		if err := msg.Term(); err != nil {
			out.Err = errors.Join(out.Err, fmt.Errorf("term: %w", err))
		}
		return out
	}
	if out.Outage != "" && out.Stream != "" {
		r.excuses.add(marker.Delivery{Stream: out.Stream, Seq: out.Sequence})
	}
	if out.Reason == reasonShutdown {
		// Another replica may take it at once.
		if err := msg.Nak(); err != nil {
			out.Err = errors.Join(out.Err, fmt.Errorf("nak: %w", err))
		}
		return out
	}
	out.Delay = r.backoff(out.Deliveries)
	if err := msg.NakWithDelay(out.Delay); err != nil {
		out.Err = errors.Join(out.Err, fmt.Errorf("nak: %w", err))
	}
	return out
}

// judge tells the breaker how a message went, and marks a failure as an
// outage (Outcome.Outage) when it says a dependency is down, or when it
// happened while one is: every delivery spent during an outage is excused.
func (r *Runner[R]) judge(ctx context.Context, out Outcome) Outcome {
	switch {
	case out.Kind == Done || out.Kind == Skipped:
		r.breaker.succeeded()
	case out.Kind != Retried || out.Outage != "" || out.Reason == reasonBusy || out.Reason == reasonShutdown:
	default:
		if o, ok := classify(out.Err); ok && r.breaker.report(ctx, o, out.Err) {
			out.Outage, out.Reason = o.dependency, reasonOutage
		} else if dep, ok := r.breaker.excusing(); ok {
			out.Outage, out.Reason = dep, reasonOutage
		}
	}
	return out
}

// counted is how many of the message's deliveries count against it: all
// but those excused. The claim read the excused deliveries of a message
// that it took at its limit; only one that failed before (its claim
// failed) is looked up here, with no connection of its batch's held.
func (r *Runner[R]) counted(ctx context.Context, out Outcome) (uint64, error) {
	if !out.excusedKnown && out.Stream != "" {
		d := marker.Delivery{Stream: out.Stream, Seq: out.Sequence}
		excused, err := r.excuses.counts(ctx, []marker.Delivery{d})
		if err != nil {
			return 0, Dependency(DependencyPostgres, fmt.Errorf("excused deliveries: %w", err))
		}
		out.Excused = uint64(excused[d])
	}
	return out.Deliveries - min(out.Deliveries, out.Excused), nil
}

func (r *Runner[R]) deadLetter(ctx context.Context, msg jetstream.Msg, out Outcome) error {
	meta, _ := msg.Metadata()
	d := events.DeadLetter{
		Reason:     out.Reason,
		Step:       r.step.Name,
		Subject:    msg.Subject(),
		Deliveries: out.Deliveries,
		Sequence:   out.Sequence,
		Time:       time.Now().UTC(),
	}
	if meta != nil {
		d.Stream = meta.Stream
	}
	if out.Err != nil {
		d.Error = out.Err.Error()
	}
	id := events.DerivedMsgID("dlq-"+r.step.Name, d.Stream, d.Sequence)
	if _, err := r.js.PublishMsg(ctx, events.DeadLetterMsg(d, msg.Headers(), msg.Data(), id)); err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	return nil
}

// backoff is the delay before delivery n+1: BackoffBase doubled per
// delivery, capped at BackoffMax, with ±10% jitter so retries spread out.
func (r *Runner[R]) backoff(n uint64) time.Duration {
	d := r.opts.BackoffBase
	for i := uint64(1); i < n && d < r.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, r.opts.BackoffMax)
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + jitter
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
