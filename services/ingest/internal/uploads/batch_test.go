package uploads

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// queued is the number of items waiting for a batch.
func (b *batcher[T]) queued() int {
	_, n := b.load()
	return n
}

// load is the number of lanes in use and of items waiting.
func (b *batcher[T]) load() (busy, queued int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.busy, len(b.queue)
}

// awaitQueued polls until n items wait.
func awaitQueued[T any](t *testing.T, b *batcher[T], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.queued() != n {
		if time.Now().After(deadline) {
			t.Fatalf("queued: got %d, want %d", b.queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// An item that finds a lane free is flushed at once, alone; the items that
// arrive while every lane is busy are flushed together, as the next batch,
// by one of them. With spill, a second lane does not open while the first
// batch runs for less than spill: the batcher behaves as with one lane.
func TestBatcherGroupsWhatArrivesWhileBusy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		lanes int
		spill time.Duration
	}{
		{"one lane", 1, 0},
		{"two lanes within spill", 2, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var (
				mu      sync.Mutex
				batches [][]int
			)
			started, release := make(chan struct{}), make(chan struct{})
			b := newBatcher(tc.lanes, 100, tc.spill, func(items []int) {
				if items[0] == 0 {
					close(started)
					<-release // the first batch holds the only lane in use
				}
				mu.Lock()
				batches = append(batches, slices.Clone(items))
				mu.Unlock()
			})
			var wg sync.WaitGroup
			wg.Go(func() { b.do(0) })
			<-started
			for i := 1; i <= 10; i++ {
				wg.Go(func() { b.do(i) })
			}
			awaitQueued(t, b, 10)
			if busy, _ := b.load(); busy != 1 {
				t.Errorf("while the first batch runs: %d lanes busy, want 1", busy)
			}
			close(release)
			wg.Wait()

			if len(batches) != 2 || !slices.Equal(batches[0], []int{0}) || len(batches[1]) != 10 {
				t.Fatalf("batches: got %v, want [0] and then the other 10 together", batches)
			}
			slices.Sort(batches[1])
			if !slices.Equal(batches[1], []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
				t.Errorf("second batch: got %v, want 1..10", batches[1])
			}
			if busy, queued := b.load(); busy != 0 || queued != 0 {
				t.Errorf("after: %d lanes busy, %d queued; want none", busy, queued)
			}
		})
	}
}

// A batch holds at most size items.
func TestBatcherCapsBatches(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		sizes []int
	)
	started, release := make(chan struct{}), make(chan struct{})
	b := newBatcher(1, 4, 0, func(items []int) {
		if items[0] < 0 {
			close(started)
			<-release
		}
		mu.Lock()
		sizes = append(sizes, len(items))
		mu.Unlock()
	})
	var wg sync.WaitGroup
	wg.Go(func() { b.do(-1) })
	<-started
	for i := range 10 {
		wg.Go(func() { b.do(i) })
	}
	awaitQueued(t, b, 10)
	close(release)
	wg.Wait()
	if !slices.Equal(sizes, []int{1, 4, 4, 2}) {
		t.Errorf("batch sizes: got %v, want [1 4 4 2]", sizes)
	}
}

// Under many concurrent callers every item is flushed exactly once, never
// more than lanes flushes run at once, and every lane comes back.
func TestBatcherUnderLoad(t *testing.T) {
	t.Parallel()
	const lanes, n = 3, 2000
	var (
		running, most atomic.Int32
		seen          [n]atomic.Int32
	)
	b := newBatcher(lanes, 16, 0, func(items []int) {
		now := running.Add(1)
		for {
			m := most.Load()
			if now <= m || most.CompareAndSwap(m, now) {
				break
			}
		}
		for _, i := range items {
			seen[i].Add(1)
		}
		time.Sleep(50 * time.Microsecond)
		running.Add(-1)
	})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { b.do(i) })
	}
	wg.Wait()
	for i := range n {
		if got := seen[i].Load(); got != 1 {
			t.Fatalf("item %d: flushed %d times, want once", i, got)
		}
	}
	if m := most.Load(); m > lanes {
		t.Errorf("flushes at once: got %d, want at most %d", m, lanes)
	}
	if busy, queued := b.load(); busy != 0 || queued != 0 {
		t.Errorf("after: %d lanes busy, %d queued; want none", busy, queued)
	}
}

// A batch that stalls past spill holds up only its own items: the ones
// queued behind it get the second lane and are flushed while it still
// runs.
func TestBatcherSpillsPastAStalledBatch(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}), make(chan struct{})
	b := newBatcher(2, 100, 10*time.Millisecond, func(items []int) {
		if items[0] == 0 {
			close(started)
			<-release // stalls until the test ends
		}
	})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	wg.Go(func() { b.do(0) })
	<-started
	done := make(chan struct{})
	go func() {
		var items sync.WaitGroup
		for i := 1; i <= 5; i++ {
			items.Go(func() { b.do(i) })
		}
		items.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the items behind a stalled batch were not flushed beside it")
	}
	if busy, queued := b.load(); busy != 1 || queued != 0 {
		t.Errorf("after: %d lanes busy, %d queued; want the stalled one only", busy, queued)
	}
}
