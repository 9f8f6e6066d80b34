package stepservice

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// DefaultGCMinHeap is the GC_MIN_HEAP blobwriter and refwriter set as their
// default (Config.GCMinHeap; ingest sets a higher one of its own): the heap
// size below which a service's garbage collector waits for more garbage.
//
// Go's collector runs each time the heap has grown by GOGC% (100) of what
// the last collection found live, and no sooner than at 4 MiB. A service
// whose live heap is a few MiB therefore collects every few MiB it
// allocates: at a few hundred uploads a second, ten or more times a second,
// each collection marking the whole live heap again. Letting the heap reach
// 16 MiB first halves or quarters those collections where the live heap is
// small. Where it is large (a backlog, many large requests at once) the
// floor changes nothing: the heap goal is GOGC's, as without it, so a
// service's peak memory stays what its live heap makes it. Where little is
// live, the heap may hold up to this much garbage more than it would
// without the floor.
const DefaultGCMinHeap = 16 << 20

// maxGCMinHeap is the largest GC_MIN_HEAP.
const maxGCMinHeap = 16 << 30

// runtimeHeapMinimum is the Go runtime's own floor under the heap goal at
// GOGC=100; the runtime scales it with GOGC.
const runtimeHeapMinimum = 4 << 20

// heapFloor raises GOGC after each collection just enough that the next
// collection waits until the heap reaches min, and lowers it back to 100 as
// the live heap grows towards half of min. It never sets GOGC under 100.
type heapFloor struct {
	min uint64

	mu      sync.Mutex // held while GOGC is read and set, so stop comes last
	stopped bool
	percent int // the GOGC last set
	samples []metrics.Sample
}

// The runtime/metrics the floor reads after each collection.
const (
	metricLive    = "/gc/heap/live:bytes"
	metricStack   = "/gc/scan/stack:bytes"
	metricGlobals = "/gc/scan/globals:bytes"
)

// startHeapFloor keeps the heap goal at floor or more until stop is
// called, which gives GOGC back its default (100). It does nothing when
// floor is 0. The runtime runs it once per collection, on its own goroutine.
func startHeapFloor(floor uint64) (stop func()) {
	if floor == 0 {
		return func() {}
	}
	f := &heapFloor{min: floor, percent: 100, samples: []metrics.Sample{
		{Name: metricLive}, {Name: metricStack}, {Name: metricGlobals},
	}}
	f.cycle()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if !f.stopped {
			f.stopped = true
			debug.SetGCPercent(100)
		}
	}
}

// gcCycle is garbage whose cleanup tells the floor a collection ended. It
// holds a pointer, so the allocator never batches it with other objects (a
// tiny pointer-free object may never be found unreachable on its own).
type gcCycle struct{ _ *byte }

// arm makes the next collection call cycle.
func (f *heapFloor) arm() {
	runtime.AddCleanup(&gcCycle{}, (*heapFloor).cycle, f)
}

// cycle adjusts GOGC and waits for the next collection, until stopped.
func (f *heapFloor) cycle() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.adjust()
	f.arm()
}

// adjust sets GOGC for what the last collection left live. SetGCPercent takes
// the heap's lock, so it is called only when the value changes by more than
// a tenth.
func (f *heapFloor) adjust() {
	metrics.Read(f.samples)
	var v [3]uint64
	for i, s := range f.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	p := floorPercent(f.min, v[0], v[1]+v[2])
	if p*10 < f.percent*9 || p*10 > f.percent*11 || (p == 100) != (f.percent == 100) {
		debug.SetGCPercent(p)
		f.percent = p
	}
}

// floorPercent is the GOGC that puts the heap goal at floor, given the live
// heap and the stacks and globals a collection scans: the runtime's goal
// is live + (live+scan)·GOGC/100, and at least 4 MiB·GOGC/100. It is never
// under 100 (the floor only ever delays a collection) nor over what would
// lift the runtime's own minimum above floor.
func floorPercent(floor, live, scan uint64) int {
	p := uint64(100)
	if floor > live && live+scan > 0 {
		p = max(p, (floor-live)*100/(live+scan))
	}
	p = min(p, max(100, floor*100/runtimeHeapMinimum))
	return int(p) // #nosec G115 -- at most maxGCMinHeap·100/4 MiB (409,600) for a valid floor
}
