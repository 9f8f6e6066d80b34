package step

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Probe reports whether a dependency answers: nil when it does.
type Probe func(ctx context.Context) error

// depState is where a dependency stands for the runner.
type depState int

const (
	// depUp: in use.
	depUp depState = iota
	// depDown: an outage was seen and the probe has not passed since;
	// the runner fetches nothing.
	depDown
	// depTrial: the probe passed; the runner fetches again, and the
	// dependency is up once a message succeeds or trialWindow passes
	// without an outage. One more outage sends it back down without a new
	// log line: a store that answers probes while still full (no space for
	// the uploads themselves) is one outage, not many.
	depTrial
)

// dependency is the circuit of one dependency.
type dependency struct {
	name  string
	probe Probe // nil: the dependency is tried again after its cool-down
	state depState
	since time.Time     // when it went down
	wait  time.Duration // cool-down before the next probe
	next  time.Time     // when to probe (down) or to call it up (trial)
}

// breaker is the runner's circuit breaker: it tells the runner to stop
// fetching while a dependency is down, probes it until it answers, and
// reports each outage once in the log and in metrics. While any dependency
// is not up, the runner excuses the deliveries its messages spend.
type breaker struct {
	step         string
	log          *slog.Logger
	metrics      *Metrics
	probeTimeout time.Duration
	firstWait    time.Duration
	maxWait      time.Duration
	trialWindow  time.Duration

	notUp  atomic.Int32 // dependencies down or on trial
	down   atomic.Int32 // dependencies down: no fetching
	mu     sync.Mutex
	deps   map[string]*dependency
	change chan struct{} // closed and replaced on every change of state
}

func newBreaker(step string, probes map[string]Probe, o Options) *breaker {
	b := &breaker{
		step: step, log: o.Logger, metrics: o.Metrics,
		probeTimeout: o.ProbeTimeout, firstWait: o.ProbeInterval, maxWait: o.ProbeMaxInterval,
		trialWindow: max(time.Second, o.ProbeInterval),
		deps:        make(map[string]*dependency, len(probes)),
		change:      make(chan struct{}),
	}
	for name, p := range probes {
		b.deps[name] = &dependency{name: name, probe: p}
		b.metrics.dependencyUp(step, name, true)
	}
	return b
}

// dep returns the circuit of name, made on first use for a dependency
// without a probe. b.mu is held.
func (b *breaker) dep(name string) *dependency {
	d, ok := b.deps[name]
	if !ok {
		d = &dependency{name: name}
		b.deps[name] = d
		b.metrics.dependencyUp(b.step, name, true)
	}
	return d
}

// report tells the breaker a message failed with an outage of o's
// dependency, and returns whether the failure is the dependency's: then
// the delivery is excused. A certain outage is; an uncertain one (a
// timeout) only if the dependency also fails its probe now.
func (b *breaker) report(ctx context.Context, o outage, err error) bool {
	b.mu.Lock()
	d := b.dep(o.dependency)
	switch d.state {
	case depDown:
		b.mu.Unlock()
		return true
	case depTrial:
		b.setState(d, depDown, time.Now())
		d.wait = min(2*d.wait, b.maxWait)
		d.next = time.Now().Add(d.wait)
		b.mu.Unlock()
		return true
	}
	probe := d.probe
	b.mu.Unlock()
	if !o.certain {
		if probe == nil || b.try(ctx, probe) == nil {
			return false // it answers: the failure is the message's
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if d.state == depUp {
		now := time.Now()
		d.since, d.wait = now, b.firstWait
		d.next = now.Add(d.wait)
		b.setState(d, depDown, now)
		b.metrics.outage(b.step, d.name)
		b.log.Error("dependency down: pausing until it is back", "step", b.step, "dependency", d.name, "error", err.Error())
	}
	return true
}

// check runs each of probes once, in the order of their names, and takes a
// dependency whose probe fails for down, as report does with a certain
// outage: a runner started while its step's bucket is missing or
// unreachable says so at once (its log, metrics, /readyz) and fetches
// nothing until the probe passes, instead of looking ready until its first
// message fails. Nothing is marked down once ctx is done.
func (b *breaker) check(ctx context.Context, probes map[string]Probe) {
	for _, name := range slices.Sorted(maps.Keys(probes)) {
		if probe := probes[name]; probe != nil {
			if err := b.try(ctx, probe); err != nil && ctx.Err() == nil {
				b.report(ctx, outage{dependency: name, certain: true}, err)
			}
		}
	}
}

// succeeded tells the breaker a message succeeded: every dependency on
// trial is up again.
func (b *breaker) succeeded() {
	if b.notUp.Load() == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	for _, d := range b.deps {
		if d.state == depTrial {
			b.setUp(d, now)
		}
	}
}

// setUp ends d's outage. b.mu is held.
func (b *breaker) setUp(d *dependency, now time.Time) {
	b.setState(d, depUp, now)
	b.log.Info("dependency back: resuming", "step", b.step, "dependency", d.name,
		"down_for", now.Sub(d.since).Round(time.Millisecond).String())
}

// setState moves d to s and wakes whoever waits for a change. b.mu is held.
func (b *breaker) setState(d *dependency, s depState, now time.Time) {
	if d.state == s {
		return
	}
	count := func(s depState) (notUp, down int32) {
		switch s {
		case depDown:
			return 1, 1
		case depTrial:
			return 1, 0
		}
		return 0, 0
	}
	n0, d0 := count(d.state)
	n1, d1 := count(s)
	b.notUp.Add(n1 - n0)
	b.down.Add(d1 - d0)
	d.state = s
	if s == depTrial {
		d.next = now.Add(b.trialWindow)
	}
	b.metrics.dependencyUp(b.step, d.name, s == depUp)
	close(b.change)
	b.change = make(chan struct{})
}

// excusing returns a dependency that is not up, if any: while one is down
// or on trial, every failed delivery is excused.
func (b *breaker) excusing() (string, bool) {
	if b.notUp.Load() == 0 {
		return "", false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, name := range b.sortedNames() {
		if b.deps[name].state != depUp {
			return name, true
		}
	}
	return "", false
}

// isDown reports whether dependency name is down (not merely on trial).
func (b *breaker) isDown(name string) bool {
	if b.down.Load() == 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.deps[name]
	return ok && d.state == depDown
}

// changed returns a channel closed at the next change of state.
func (b *breaker) changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.change
}

// paused reports whether a dependency is down: the runner fetches nothing.
func (b *breaker) paused() bool { return b.down.Load() > 0 }

// unavailable returns the dependencies that are not up, sorted.
func (b *breaker) unavailable() []string {
	if b.notUp.Load() == 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, name := range b.sortedNames() {
		if b.deps[name].state != depUp {
			out = append(out, name)
		}
	}
	return out
}

func (b *breaker) sortedNames() []string {
	names := make([]string, 0, len(b.deps))
	for name := range b.deps {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// wait returns once no dependency is down, or ctx is done.
func (b *breaker) wait(ctx context.Context) {
	for b.paused() {
		b.mu.Lock()
		change := b.change
		b.mu.Unlock()
		if !b.paused() {
			return
		}
		select {
		case <-change:
		case <-ctx.Done():
			return
		}
	}
}

// try runs probe with the probe timeout.
func (b *breaker) try(ctx context.Context, probe Probe) error {
	pctx, cancel := context.WithTimeout(ctx, b.probeTimeout)
	defer cancel()
	return probe(pctx)
}

// run probes the dependencies that are down, each at its own growing
// interval, puts those that answer on trial, and calls up those whose
// trial passed, until ctx is done.
func (b *breaker) run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for ctx.Err() == nil {
		b.mu.Lock()
		change := b.change
		now := time.Now()
		var due []*dependency
		next := now.Add(time.Hour)
		for _, d := range b.deps {
			switch {
			case d.state == depUp:
				continue
			case !d.next.After(now):
				due = append(due, d)
			case d.next.Before(next):
				next = d.next
			}
		}
		b.mu.Unlock()
		if len(due) == 0 {
			t.Reset(next.Sub(now))
			select {
			case <-t.C:
			case <-change:
				t.Stop()
			case <-ctx.Done():
			}
			continue
		}
		for _, d := range due {
			b.advance(ctx, d)
		}
	}
}

// advance probes d if it is down, or calls it up if its trial passed.
func (b *breaker) advance(ctx context.Context, d *dependency) {
	b.mu.Lock()
	st, probe := d.state, d.probe
	b.mu.Unlock()
	var err error
	if st == depDown && probe != nil {
		err = b.try(ctx, probe)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	switch {
	case d.state != st:
		// changed while probing: look again
	case st == depTrial:
		b.setUp(d, now)
	case err != nil:
		d.wait = min(2*d.wait, b.maxWait)
		d.next = now.Add(d.wait)
	default:
		b.setState(d, depTrial, now)
	}
}
