package step

import "sync"

// workers runs functions on goroutines that outlive them: a goroutine that
// has run one waits for the next instead of exiting, and a new one starts
// only when none is waiting. A new goroutine's stack starts small and is
// copied each time it doubles; a side effect's calls (a bucket driver,
// pgx, JSON) grow it several times over, which cost the consumers about a
// tenth of their CPU when every side effect and batch had a goroutine of
// its own. So there are never more goroutines than functions that ran at
// once, and each keeps the stack it grew. stop ends the waiting ones.
type workers struct {
	next chan func() // unbuffered: a send succeeds only if a goroutine waits
	quit chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func newWorkers() *workers {
	return &workers{next: make(chan func()), quit: make(chan struct{})}
}

// Go runs f on a waiting goroutine, or on a new one.
func (w *workers) Go(f func()) {
	select {
	case w.next <- f:
	default:
		w.wg.Add(1)
		go w.run(f)
	}
}

func (w *workers) run(f func()) {
	defer w.wg.Done()
	for {
		f()
		select {
		case f = <-w.next:
		case <-w.quit:
			return
		}
	}
}

// stop ends the goroutines once they have run what they were given, and
// waits for them. A function given after stop still runs, on a goroutine
// that then ends.
func (w *workers) stop() {
	w.once.Do(func() { close(w.quit) })
	w.wg.Wait()
}
