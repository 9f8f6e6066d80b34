package step

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// goID is the id of the calling goroutine, from its stack's header line.
func goID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	var id []byte
	for _, c := range buf[len("goroutine "):] {
		if c < '0' || c > '9' {
			break
		}
		id = append(id, c)
	}
	return string(id)
}

// A function given while a goroutine waits runs on that goroutine: one
// after another, everything runs on one.
func TestWorkersReuseAWaitingGoroutine(t *testing.T) {
	w := newWorkers()
	defer w.stop()
	ids := make(map[string]bool)
	for range 20 {
		ran := make(chan string)
		w.Go(func() { ran <- goID() })
		ids[<-ran] = true
		waitUntil(t, func() bool { return waitingWorkers() == 1 })
	}
	if len(ids) != 1 {
		t.Fatalf("20 functions one after another ran on %d goroutines, want 1", len(ids))
	}
}

// Functions given while the others still run each get a goroutine of
// their own (Go never waits for one to be free), and those given later
// reuse them: never more goroutines than functions that ran at once.
func TestWorkersRunAtOnceWhatIsGivenAtOnce(t *testing.T) {
	w := newWorkers()
	defer w.stop()
	release := make(chan struct{})
	started := make(chan struct{}, 8)
	for range 8 {
		w.Go(func() {
			started <- struct{}{}
			<-release
		})
	}
	for i := range 8 {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of 8 functions given at once started, want all of them running together", i)
		}
	}
	close(release)
	waitUntil(t, func() bool { return waitingWorkers() == 8 })
	for range 8 {
		done := make(chan struct{})
		w.Go(func() { close(done) })
		<-done
		waitUntil(t, func() bool { return waitingWorkers() == 8 })
	}
}

// stop waits for the goroutines to end; a function given after it still
// runs.
func TestWorkersStop(t *testing.T) {
	w := newWorkers()
	done := make(chan struct{})
	w.Go(func() { close(done) })
	<-done
	waitUntil(t, func() bool { return waitingWorkers() == 1 })
	w.stop()
	if n := waitingWorkers(); n != 0 {
		t.Fatalf("%d goroutines still wait after stop", n)
	}
	ran := make(chan struct{})
	w.Go(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("a function given after stop did not run")
	}
	w.stop()
}

// waitingWorkers counts the goroutines of any workers that wait for a
// function, from every goroutine's stack.
func waitingWorkers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, " [select") && strings.Contains(g, "(*workers).run(") {
			n++
		}
	}
	return n
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
