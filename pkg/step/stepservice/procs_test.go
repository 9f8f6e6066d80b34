package stepservice

import (
	"runtime"
	"slices"
	"testing"
	"time"
)

// fakeProcs is a process whose CPU time the test advances, and whose
// GOMAXPROCS settings it records (default: what 0 sets).
type fakeProcs struct {
	cpu     time.Duration
	failing bool
	procs   int
	set     []int
	deflt   int
}

func (f *fakeProcs) governor() *procsGovernor {
	return &procsGovernor{
		cpu: func() (time.Duration, bool) { return f.cpu, !f.failing },
		set: func(n int) int {
			f.set = append(f.set, n)
			f.procs = n
			if n == 0 {
				f.procs = f.deflt
			}
			return f.procs
		},
	}
}

// TestProcsGovernor drives the governor through a load that comes and goes
// and checks each setting it makes.
func TestProcsGovernor(t *testing.T) {
	f := &fakeProcs{deflt: 8}
	g := f.governor()
	at := time.Unix(0, 0)
	if !g.start(at) {
		t.Fatal("start: false with a readable CPU time")
	}
	if f.procs != 1 {
		t.Fatalf("a service starts at one processor: GOMAXPROCS %d", f.procs)
	}
	// use advances one tick during which the process used cpus CPUs.
	use := func(cpus float64) {
		at = at.Add(procsTick)
		f.cpu += time.Duration(cpus * float64(procsTick))
		g.tick(at)
	}
	for _, step := range []struct {
		what string
		cpus float64
		want int
	}{
		{"idle", 0.02, 1},
		{"moderate, under the raise", 0.79, 1},
		{"its one processor nearly saturated: Go's default back", 0.95, 8},
		{"heavy", 3.5, 8},
		{"lighter, but over half a CPU", 0.6, 8},
		{"calm 1 of 5", 0.3, 8},
		{"calm 2 of 5", 0.3, 8},
		{"calm 3 of 5", 0.3, 8},
		{"calm 4 of 5", 0.3, 8},
		{"busy again: the count starts over", 0.7, 8},
		{"calm 1 of 5, again", 0.1, 8},
		{"calm 2 of 5", 0.1, 8},
		{"calm 3 of 5", 0.1, 8},
		{"calm 4 of 5", 0.1, 8},
		{"calm 5 of 5: one processor", 0.1, 1},
		{"a burst: the default again at once", 1.2, 8},
	} {
		use(step.cpus)
		if f.procs != step.want {
			t.Fatalf("%s (%.2f CPUs): GOMAXPROCS %d, want %d (settings so far %v)", step.what, step.cpus, f.procs, step.want, f.set)
		}
	}
	if want := []int{1, 0, 1, 0}; !slices.Equal(f.set, want) {
		t.Errorf("settings %v, want %v: only changes are set", f.set, want)
	}

	// A reading that fails changes nothing, and the next one measures
	// from the last good reading.
	f.failing = true
	use(0.1)
	f.failing = false
	if f.procs != 8 {
		t.Errorf("after a failed reading: GOMAXPROCS %d, want 8", f.procs)
	}

	g.stop()
	if f.procs != 8 || f.set[len(f.set)-1] != 0 {
		t.Errorf("stop: GOMAXPROCS %d, settings %v; want the default (0) last", f.procs, f.set)
	}
	n := len(f.set)
	for range procsCalmTicks + 1 {
		use(0)
	}
	if len(f.set) != n {
		t.Errorf("ticks after stop set GOMAXPROCS: %v", f.set[n:])
	}
}

// A process whose CPU time cannot be read keeps Go's GOMAXPROCS.
func TestProcsGovernorUnreadable(t *testing.T) {
	f := &fakeProcs{deflt: 4, failing: true}
	if f.governor().start(time.Now()) {
		t.Fatal("start: true with no CPU time to read")
	}
	if len(f.set) != 0 {
		t.Errorf("set GOMAXPROCS to %v without a reading", f.set)
	}
}

// TestProcsGovernorRuntime runs the governor on this process's runtime: it
// starts at one processor, gives the default back under load within a few
// ticks, and stop leaves the default.
func TestProcsGovernorRuntime(t *testing.T) {
	deflt := runtime.GOMAXPROCS(0)
	if deflt < 2 {
		t.Skipf("GOMAXPROCS is %d here: the governor has nothing to do", deflt)
	}
	if _, ok := processCPU(); !ok {
		t.Skip("the process's CPU time cannot be read here")
	}
	t.Cleanup(runtime.SetDefaultGOMAXPROCS)
	stop := startProcsGovernor()
	defer stop()
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("after start: GOMAXPROCS %d, want 1", n)
	}
	// Keep one processor busy until the governor gives the default back.
	done := make(chan struct{})
	spun := make(chan struct{})
	go func() {
		defer close(spun)
		x := 0
		for {
			select {
			case <-done:
				sinkInt = x
				return
			default:
				for i := range 1 << 16 {
					x += i
				}
			}
		}
	}()
	deadline := time.Now().Add(10 * procsTick)
	for runtime.GOMAXPROCS(0) == 1 && time.Now().Before(deadline) {
		time.Sleep(procsTick / 10)
	}
	close(done)
	<-spun
	if n := runtime.GOMAXPROCS(0); n != deflt {
		t.Fatalf("a saturated processor for %v: GOMAXPROCS %d, want the default %d", 10*procsTick, n, deflt)
	}
	stop()
	if n := runtime.GOMAXPROCS(0); n != deflt {
		t.Errorf("after stop: GOMAXPROCS %d, want the default %d", n, deflt)
	}
}

// sinkInt keeps the busy loop from being optimised away.
var sinkInt int

// ADAPTIVE_PROCS is on by default and can be turned off; GOMAXPROCS is
// read so that Main can leave an operator's setting alone.
func TestAdaptiveProcsSetting(t *testing.T) {
	var c Config
	if err := Load(&c); err != nil {
		t.Fatal(err)
	}
	if !c.AdaptiveProcs {
		t.Error("ADAPTIVE_PROCS unset: off, want on")
	}
	t.Setenv("ADAPTIVE_PROCS", "false")
	t.Setenv("GOMAXPROCS", "3")
	c = Config{}
	if err := Load(&c); err != nil {
		t.Fatal(err)
	}
	if c.AdaptiveProcs || c.GOMAXPROCS != "3" {
		t.Errorf("ADAPTIVE_PROCS=false GOMAXPROCS=3: read %v and %q", c.AdaptiveProcs, c.GOMAXPROCS)
	}
}
