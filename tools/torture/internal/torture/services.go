package torture

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blobref/blobref/internal/freeport"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/tools/torture/internal/proc"
)

// Failpoints are the points a restarted service may be armed to crash at:
// every boundary of every step (the runtime's, step.Failpoints), and
// ingest's between staging, recording and publishing.
var Failpoints = map[string][]string{
	"blobwriter": step.Failpoints(events.StepBlob),
	"refwriter":  step.Failpoints(events.StepRef),
	"ingest":     {"ingest/after-stage", "ingest/after-record", "ingest/after-publish"},
}

// slot is one replica of a service: the process running it now, restarted
// by its supervisor whenever it dies until the run stops.
type slot struct {
	service     string
	index       int
	metricsAddr string
	httpAddr    string // ingest only
	bin         string
	env         []string
	logPath     string

	mu   sync.Mutex
	cur  *proc.Process
	fp   string // the failpoint spec cur was started with
	done chan struct{}
}

func (s *slot) name() string { return fmt.Sprintf("%s-%d", s.service, s.index) }

func (s *slot) current() (*proc.Process, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.fp
}

// fleet supervises every slot.
type fleet struct {
	slots []*slot
	log   func(format string, args ...any)

	arming   atomic.Bool // restarts may arm a crash failpoint
	stopping atomic.Bool
	rngMu    sync.Mutex
	rng      *rand.Rand

	mu             sync.Mutex
	fpCrashes      map[string]int // failpoint -> crashes there
	randomKills    int
	unexpectedExit []string
	starts         int
	wg             sync.WaitGroup
}

func (f *fleet) intN(n int) int {
	f.rngMu.Lock()
	defer f.rngMu.Unlock()
	return f.rng.IntN(n)
}

func (f *fleet) kills() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.randomKills
	for _, c := range f.fpCrashes {
		n += c
	}
	return n
}

// start starts s's process, armed with failpoint spec fp ("" for none).
func (f *fleet) start(s *slot, fp string) error {
	env := append([]string{}, s.env...)
	if fp != "" {
		env = append(env, "BLOBREF_FAILPOINTS="+fp)
	}
	p, err := proc.Start(s.name(), s.logPath, s.bin, env)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cur, s.fp = p, fp
	s.mu.Unlock()
	f.mu.Lock()
	f.starts++
	f.mu.Unlock()
	return nil
}

// supervise restarts s after every death, after a short random pause, armed
// with a random crash failpoint half of the time while arming is on.
func (f *fleet) supervise(s *slot) {
	defer f.wg.Done()
	defer close(s.done)
	for {
		p, fp := s.current()
		exit := p.Wait()
		if f.stopping.Load() {
			return
		}
		switch {
		case exit.SelfKilled && fp != "":
			f.mu.Lock()
			f.fpCrashes[strings.SplitN(fp, "=", 2)[0]]++
			f.mu.Unlock()
		case exit.Requested:
			// A kill of the chaos loop, counted there.
		default:
			last := proc.LastWords(s.logPath)
			f.mu.Lock()
			f.unexpectedExit = append(f.unexpectedExit, fmt.Sprintf("%s (pid %d, failpoints %q): %v; last log line: %s", s.name(), p.Pid(), fp, exit.Err, last))
			f.mu.Unlock()
			f.log("UNEXPECTED EXIT %s: %v (log %s): %s", s.name(), exit.Err, s.logPath, last)
		}
		time.Sleep(time.Duration(50+f.intN(400)) * time.Millisecond)
		next := ""
		if f.arming.Load() && f.intN(2) == 0 {
			points := Failpoints[s.service]
			act := "1*crash"
			if f.intN(3) == 0 {
				act = fmt.Sprintf("%d%%crash", 10+f.intN(40))
			}
			next = points[f.intN(len(points))] + "=" + act
		}
		for {
			if f.stopping.Load() {
				return
			}
			err := f.start(s, next)
			if err == nil {
				break
			}
			f.log("restart %s: %v", s.name(), err)
			time.Sleep(time.Second)
		}
	}
}

// killRandom SIGKILLs the process of a random slot, if it runs.
func (f *fleet) killRandom() bool {
	s := f.slots[f.intN(len(f.slots))]
	p, _ := s.current()
	if p == nil || p.Exited() {
		return false
	}
	p.Kill()
	f.mu.Lock()
	f.randomKills++
	f.mu.Unlock()
	return true
}

// stop ends supervision and stops every process with SIGTERM.
func (f *fleet) stop() {
	f.stopping.Store(true)
	for _, s := range f.slots {
		if p, _ := s.current(); p != nil && !p.Exited() {
			if !p.Stop(30 * time.Second) {
				f.log("%s did not stop within 30s of SIGTERM", s.name())
			}
		}
	}
	f.wg.Wait()
}

// awaitReady waits until every slot's /readyz answers 200.
func (f *fleet) awaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, s := range f.slots {
		for {
			resp, err := http.Get("http://" + s.metricsAddr + "/readyz")
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(s.logPath)
				return fmt.Errorf("%s not ready after %v: %v\n%s", s.name(), timeout, err, tail(b, 3000))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// newFleet lays out replicas of each service with their own addresses.
func newFleet(binDir, logDir string, replicas int, common []string, log func(string, ...any), rng *rand.Rand) (*fleet, error) {
	f := &fleet{log: log, rng: rng, fpCrashes: map[string]int{}}
	for _, svc := range []string{"ingest", "blobwriter", "refwriter"} {
		for i := range replicas {
			mp, err := freeport.Port()
			if err != nil {
				return nil, err
			}
			s := &slot{service: svc, index: i + 1, bin: filepath.Join(binDir, svc), done: make(chan struct{}),
				metricsAddr: fmt.Sprintf("127.0.0.1:%d", mp)}
			s.logPath = filepath.Join(logDir, s.name()+".log")
			s.env = append(append([]string{}, common...), "METRICS_ADDR="+s.metricsAddr)
			if svc == "ingest" {
				hp, err := freeport.Port()
				if err != nil {
					return nil, err
				}
				s.httpAddr = fmt.Sprintf("127.0.0.1:%d", hp)
				s.env = append(s.env, "HTTP_ADDR="+s.httpAddr, "AUTH_TOKENS="+token+"="+caller,
					"INLINE_THRESHOLD=16KiB")
			}
			f.slots = append(f.slots, s)
		}
	}
	return f, nil
}

// run starts every slot and its supervisor.
func (f *fleet) run() error {
	for _, s := range f.slots {
		if err := f.start(s, ""); err != nil {
			return err
		}
	}
	for _, s := range f.slots {
		f.wg.Add(1)
		go f.supervise(s)
	}
	return nil
}

func (f *fleet) ingestAddrs() []string {
	var out []string
	for _, s := range f.slots {
		if s.httpAddr != "" {
			out = append(out, s.httpAddr)
		}
	}
	return out
}
