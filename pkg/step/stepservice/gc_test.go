package stepservice

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestFloorPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name              string
		floor, live, scan uint64
		want              int
	}{
		{"a small live heap: the goal at the floor", 32 * mib, 4 * mib, 0, 700},
		{"stacks and globals count as the runtime counts them", 32 * mib, 4 * mib, 4 * mib, 350},
		{"capped where the runtime's own minimum would pass the floor", 16 * mib, 1 * mib, 0, 400},
		{"half the floor live: GOGC's own goal", 32 * mib, 16 * mib, 0, 100},
		{"more live than the floor: never under 100", 32 * mib, 64 * mib, 0, 100},
		{"a floor at Go's own minimum changes nothing", 4 * mib, 1 * mib, 0, 100},
		{"nothing read yet", 32 * mib, 0, 0, 100},
	} {
		if got := floorPercent(c.floor, c.live, c.scan); got != c.want {
			t.Errorf("%s: floorPercent(%d MiB, %d MiB, %d MiB) = %d, want %d",
				c.name, c.floor/mib, c.live/mib, c.scan/mib, got, c.want)
		}
	}
}

// A service's own default stands unless GC_MIN_HEAP is set, also to 0.
func TestGCMinHeapDefaultIsTheServices(t *testing.T) {
	var none Config
	if err := Load(&none); err != nil {
		t.Fatal(err)
	}
	if none.GCMinHeap != 0 {
		t.Errorf("GC_MIN_HEAP unset, no default of the service's: got %d, want 0", none.GCMinHeap)
	}
	c := Config{GCMinHeap: DefaultGCMinHeap}
	if err := Load(&c); err != nil {
		t.Fatal(err)
	}
	if c.GCMinHeap != DefaultGCMinHeap {
		t.Errorf("GC_MIN_HEAP unset: got %d, want the service's %d", c.GCMinHeap, DefaultGCMinHeap)
	}
	t.Setenv("GC_MIN_HEAP", "0")
	if err := Load(&c); err != nil {
		t.Fatal(err)
	}
	if c.GCMinHeap != 0 {
		t.Errorf("GC_MIN_HEAP=0: got %d, want 0", c.GCMinHeap)
	}
}

// sink keeps the test's allocations from being optimised away.
var sink []byte

// collections allocates 256 MiB of garbage in 64 KiB pieces, with little
// live, and returns how many collections ran meanwhile and the heap goal
// after.
func collections() (cycles, goal uint64) {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/heap/goal:bytes"}}
	runtime.GC()
	metrics.Read(s)
	before := s[0].Value.Uint64()
	for range 4096 {
		sink = make([]byte, 64<<10)
	}
	metrics.Read(s)
	return s[0].Value.Uint64() - before, s[1].Value.Uint64()
}

func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// Not parallel: the floor sets GOGC for the whole test binary.
func TestHeapFloorDelaysCollections(t *testing.T) {
	const floor = 64 << 20
	without, _ := collections()
	stop := startHeapFloor(floor)
	with, goal := collections()
	stop()
	t.Logf("collections while 256 MiB were allocated: %d without the floor, %d with it (heap goal %d MiB)",
		without, with, goal>>20)
	if with == 0 || with*3 > without {
		t.Errorf("with a 64 MiB floor: got %d collections against %d without, want a third or fewer", with, without)
	}
	if goal < floor*3/4 {
		t.Errorf("heap goal with a 64 MiB floor: got %d MiB, want about 64", goal>>20)
	}
	if p := gogc(); p != 100 {
		t.Errorf("GOGC after stop: got %d, want 100", p)
	}
	if again, _ := collections(); again*2 < without {
		t.Errorf("after stop: got %d collections, want about as many as without the floor (%d)", again, without)
	}
}

// A live heap over half the floor leaves GOGC at 100: the floor only ever
// delays the collections of a small heap.
func TestHeapFloorStandsAsideForALargeHeap(t *testing.T) {
	const floor = 16 << 20
	stop := startHeapFloor(floor)
	defer stop()
	runtime.GC()
	if p := gogc(); p <= 100 {
		t.Fatalf("small live heap: GOGC %d, want over 100", p)
	}
	live := make([][]byte, 32)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	// The floor hears of a collection from a cleanup the runtime runs
	// after it, on a goroutine of its own.
	deadline := time.Now().Add(10 * time.Second)
	for p := gogc(); p != 100; p = gogc() {
		if time.Now().After(deadline) {
			t.Fatalf("32 MiB live, floor 16 MiB: GOGC %d, want 100", p)
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	runtime.KeepAlive(live)
}
