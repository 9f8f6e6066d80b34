package stepservice

import (
	"runtime"
	"sync"
	"time"
)

// A service's GOMAXPROCS follows its own CPU use (Config.AdaptiveProcs).
//
// Go sizes a process's scheduler for every CPU it may use (the host's, or
// its container's limit). Each time a goroutine wakes another (a message
// handed from the NATS client to a batch, a Postgres reply to its caller)
// while a processor is idle, the runtime wakes a second thread to look for
// the work, and that thread goes back to sleep, mostly having found none:
// two system calls and two context switches more per hand-over. Where the
// services share a few CPUs with nats-server and Postgres, and each of them
// is busy well under one CPU, that is a large share of what an upload
// costs. With GOMAXPROCS=1 a hand-over stays on the running thread
// (goroutines blocked in system calls still run beside it). On a 2-CPU
// machine running the whole pipeline, the three services at 1 took a fifth
// to a quarter off the CPU per upload and the 1-client p50, and raised the
// rate at 64 and 256 clients by a sixth (docs/benchmarks.md, "The
// twenty-second session").
//
// The governor keeps GOMAXPROCS at 1 while the process uses less than
// procsLowerAt of a CPU, and gives it the runtime's default back (every CPU
// the process may use) as soon as it uses procsRaiseAt of its one: under
// heavy load a service scales as Go would scale it, and within a second.
type procsGovernor struct {
	// cpu is the CPU time the process has used so far; set changes
	// GOMAXPROCS to n, 0 meaning the runtime's default, and returns the
	// value it took.
	cpu func() (time.Duration, bool)
	set func(n int) int

	mu      sync.Mutex
	procs   int           // GOMAXPROCS now
	last    time.Duration // cpu at the last tick
	lastAt  time.Time
	calm    int // ticks in a row under procsLowerAt
	stopped bool
}

// The governor's thresholds, in CPUs used over a tick.
const (
	// procsRaiseAt: the one processor is nearly saturated; the default
	// comes back at the next tick.
	procsRaiseAt = 0.8
	// procsLowerAt: under half a CPU for procsCalmTicks ticks in a row
	// goes back to one.
	procsLowerAt   = 0.5
	procsCalmTicks = 5
	// procsTick is how often the governor reads the process's CPU time.
	procsTick = time.Second
)

// startProcsGovernor runs the governor until stop is called, which gives
// GOMAXPROCS its default back. It does nothing where the default is one
// CPU already or the process's CPU time cannot be read.
func startProcsGovernor() (stop func()) {
	if runtime.GOMAXPROCS(0) <= 1 {
		return func() {}
	}
	g := &procsGovernor{cpu: processCPU, set: setProcs}
	if !g.start(time.Now()) {
		return func() {}
	}
	t := time.NewTicker(procsTick)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case now := <-t.C:
				g.tick(now)
			case <-done:
				return
			}
		}
	})
	return sync.OnceFunc(func() {
		t.Stop()
		close(done)
		wg.Wait()
		g.stop()
	})
}

// setProcs sets GOMAXPROCS to n, or to the runtime's default for 0 (which
// also gives the runtime back its own updates of it, as the CPU limit
// changes), and returns it.
func setProcs(n int) int {
	if n == 0 {
		runtime.SetDefaultGOMAXPROCS()
	} else {
		runtime.GOMAXPROCS(n)
	}
	return runtime.GOMAXPROCS(0)
}

// start takes the first reading and goes to one processor: a service starts
// idle. It reports false, having changed nothing, when the CPU time cannot
// be read.
func (g *procsGovernor) start(now time.Time) bool {
	cpu, ok := g.cpu()
	if !ok {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.last, g.lastAt = cpu, now
	g.procs = g.set(1)
	return true
}

// tick reads the CPU time used since the last tick and sets GOMAXPROCS for
// it.
func (g *procsGovernor) tick(now time.Time) {
	cpu, ok := g.cpu()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped || !ok {
		return
	}
	elapsed := now.Sub(g.lastAt)
	if elapsed <= 0 {
		return
	}
	used := float64(cpu-g.last) / float64(elapsed)
	g.last, g.lastAt = cpu, now
	switch {
	case g.procs == 1 && used >= procsRaiseAt:
		g.calm = 0
		g.procs = g.set(0)
	case g.procs > 1 && used < procsLowerAt:
		g.calm++
		if g.calm >= procsCalmTicks {
			g.calm = 0
			g.procs = g.set(1)
		}
	default:
		g.calm = 0
	}
}

// stop gives GOMAXPROCS its default back; ticks after it change nothing.
func (g *procsGovernor) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.stopped {
		g.stopped = true
		g.procs = g.set(0)
	}
}
