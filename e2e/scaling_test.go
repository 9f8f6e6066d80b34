package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// Sizes of the scaling test: the uploads of the phase with every replica up,
// and of each phase that stops a blobwriter replica half-way.
const (
	scalingUploads     = 3000
	scalingStopUploads = 1000
	// minShare is the least share of a step's side effects each replica must
	// run while all are up: a third (or half) is fair, a tenth shows the
	// durable consumer spreads the work rather than one replica taking it.
	minShare = 0.10
)

// Three blobwriter and two refwriter processes share their steps' durable
// consumers. With all of them up, every replica runs a fair part of a few
// thousand uploads and each side effect runs once in total. Then a
// blobwriter replica is stopped half-way through a batch, first with
// SIGTERM, then (after a replacement joined) with SIGKILL, and the others
// finish its work: every invariant holds after each phase.
//
// It does not run in parallel with the other tests, so that its timings
// measure the pipeline alone.
func TestScalingAcrossReplicas(t *testing.T) {
	p := newPipeline(t)
	done := watchCompletions(t, p.nc)
	// Debug logs name the outcome of every message, so a replica's part is
	// known even after it exited; phase 1 checks them against its counters.
	// A replica holds at most inFlight messages: with the killed replica's
	// figure read from its log, that bounds what is in doubt in phase 3.
	env := []string{"LOG_LEVEL=debug", "CONSUMER_BATCH_SIZE=16", "CONSUMER_MAX_IN_FLIGHT=" + strconv.Itoa(inFlight)}
	blobwriters := []*proc{p.start("blobwriter", env...), p.start("blobwriter", env...), p.start("blobwriter", env...)}
	refwriters := []*proc{p.start("refwriter", env...), p.start("refwriter", env...)}
	all := []upload{}
	started := time.Now()

	// Phase 1: every replica up.
	phase := time.Now()
	batch := scalingBatch("all", scalingUploads)
	all = append(all, batch...)
	for _, u := range batch {
		p.publish(u, u.ID)
	}
	done.await(t, batch, 3*time.Minute)
	elapsed := time.Since(phase)
	p.checkInvariants(all)
	for id, n := range done.counts(batch) {
		if n != 1 {
			t.Errorf("%s: %d completed events, want 1", id, n)
		}
	}
	blobBase := effectsOf(t, blobwriters, "blob")
	refBase := effectsOf(t, refwriters, "ref")
	checkSpread(t, "blob", blobwriters, blobBase, len(batch))
	checkSpread(t, "ref", refwriters, refBase, len(batch))
	t.Logf("phase 1: %d uploads through %d blobwriter and %d refwriter replicas in %v (%.0f uploads/s, -race=%v)",
		len(batch), len(blobwriters), len(refwriters), elapsed.Round(time.Millisecond), float64(len(batch))/elapsed.Seconds(), testenv.RaceEnabled)
	t.Logf("phase 1: blob side effects per replica %s", shares(blobBase, len(batch)))
	t.Logf("phase 1: ref side effects per replica  %s", shares(refBase, len(batch)))

	// Phase 2: a blobwriter replica stopped with SIGTERM half-way.
	stopped, survivors := blobwriters[0], blobwriters[1:]
	batch = scalingBatch("term", scalingStopUploads)
	all = append(all, batch...)
	phase = time.Now()
	res := p.stopMidRun(done, batch, stopped, func() { stopped.Stop(t) })
	elapsed = time.Since(phase)
	p.checkInvariants(all)
	figure := res.figure(survivors)
	// A graceful stop finishes what it started and hands back the rest:
	// each side effect still ran exactly once.
	if got := res.effects(t, survivors, blobBase[1:]); got != len(batch) {
		t.Errorf("phase 2: blob effects across replicas: got %d (%s), want %d", got, figure, len(batch))
	}
	if res.stoppedDone == 0 {
		t.Errorf("phase 2: the stopped replica ran no side effect of the batch; want it stopped mid-run")
	}
	t.Logf("phase 2: SIGTERM to a blobwriter after %d of %d blobs; all %d done in %v; blob side effects: %s; %d messages redelivered to the others, %d completed events re-emitted",
		res.markersAtStop, len(batch), len(batch), elapsed.Round(time.Millisecond), figure, res.redelivered, res.reemitted)

	// Phase 3: a new replica makes three again, then one is killed half-way.
	blobwriters = []*proc{survivors[0], survivors[1], p.start("blobwriter", env...)}
	base := append(effectsOf(t, survivors, "blob"), 0)
	killed := blobwriters[1]
	survivors, survivorBase := []*proc{blobwriters[0], blobwriters[2]}, []float64{base[0], base[2]}
	batch = scalingBatch("kill", scalingStopUploads)
	all = append(all, batch...)
	phase = time.Now()
	res = p.stopMidRun(done, batch, killed, func() {
		killed.Kill()
		killed.AwaitCrash(t)
	})
	elapsed = time.Since(phase)
	p.checkInvariants(all)
	figure = res.figure(survivors)
	// A killed replica may have run the side effects of the messages it held
	// without recording them, or recorded some without logging them: only
	// those are in doubt. (blobwriter, running one again, finds the object
	// and records it without writing.)
	if got := res.effects(t, survivors, survivorBase); got < len(batch)-inFlight || got > len(batch)+inFlight {
		t.Errorf("phase 3: blob effects across replicas: got %d (%s), want %d ± %d (the killed replica's messages in flight)",
			got, figure, len(batch), inFlight)
	}
	if res.stoppedDone == 0 {
		t.Errorf("phase 3: the killed replica ran no side effect of the batch; want it killed mid-run")
	}
	t.Logf("phase 3: SIGKILL to a blobwriter after %d of %d blobs; all %d done in %v; blob side effects: %s; %d messages redelivered to the others, %d completed events re-emitted",
		res.markersAtStop, len(batch), len(batch), elapsed.Round(time.Millisecond), figure, res.redelivered, res.reemitted)

	refTotal := sum(effectsOf(t, refwriters, "ref"))
	if int(refTotal) != len(all) {
		t.Errorf("reference writes across replicas: got %v, want %d", refTotal, len(all))
	}
	for _, step := range []string{"blob", "ref"} {
		if n := p.pg.Count(t, `SELECT count(*) FROM step_markers WHERE step = $1`, step); n != len(all) {
			t.Errorf("%s markers: got %d, want %d", step, n, len(all))
		}
	}
	if d := testenv.DeadLetters(t, p.js); len(d) != 0 {
		t.Errorf("dead letters: got %d (%v), want none", len(d), d)
	}
	t.Logf("total: %d uploads in %v; 4 blobwriter processes (3 at a time: one stopped, one killed, one added) and 2 refwriter",
		len(all), time.Since(started).Round(time.Millisecond))
}

// scalingBatch returns n small uploads whose ids start with prefix.
func scalingBatch(prefix string, n int) []upload {
	out := make([]upload, n)
	for i := range out {
		out[i] = newUpload(fmt.Sprintf("%s-%04d", prefix, i), 256+i%768)
	}
	return out
}

// stopResult is what happened around a replica stopped mid-run.
type stopResult struct {
	prefix        string
	stopped       *proc
	markersAtStop int // blob markers of the batch when the stop began
	stoppedDone   int // side effects of the batch the stopped replica recorded
	redelivered   int // messages of the batch the others got on a later delivery
	reemitted     int // completed events beyond one per upload, when all had one
}

// stopMidRun publishes the first half of batch, calls stop once a quarter of
// it has its blob stored, publishes the second half and waits until every
// upload of the batch completed.
func (p *pipeline) stopMidRun(done *completions, batch []upload, victim *proc, stop func()) stopResult {
	p.t.Helper()
	prefix := batch[0].ID[:strings.IndexByte(batch[0].ID, '-')+1]
	half := len(batch) / 2
	for _, u := range batch[:half] {
		p.publish(u, u.ID)
	}
	res := stopResult{prefix: prefix, stopped: victim}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		res.markersAtStop = p.pg.Count(p.t, `SELECT count(*) FROM step_markers WHERE step = 'blob' AND upload_id LIKE $1`, prefix+"%")
		if res.markersAtStop >= len(batch)/4 {
			break
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%sblob markers: got %d after 2m, want %d", prefix, res.markersAtStop, len(batch)/4)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	for _, u := range batch[half:] {
		p.publish(u, u.ID)
	}
	done.await(p.t, batch, 3*time.Minute)
	for _, n := range done.counts(batch) {
		res.reemitted += n - 1
	}
	res.stoppedDone = logged(victim, "blob", prefix).done
	return res
}

// inFlight is CONSUMER_MAX_IN_FLIGHT of the scaling test's replicas.
const inFlight = 32

// effects is the side effects of the batch across replicas: the stopped
// one's from its log, the others' from their counters since base.
func (r stopResult) effects(t *testing.T, others []*proc, base []float64) int {
	t.Helper()
	n := r.stoppedDone
	for i, pr := range others {
		n += int(pr.metric(t, "blobref_step_effects_total", `step="blob"`) - base[i])
	}
	return n
}

// figure describes each replica's part of the batch, as each logged it, and
// counts the redeliveries the others handled.
func (r *stopResult) figure(others []*proc) string {
	r.redelivered = 0
	parts := make([]string, len(others))
	for i, pr := range others {
		l := logged(pr, "blob", r.prefix)
		r.redelivered += l.redelivered
		parts[i] = strconv.Itoa(l.done)
	}
	return fmt.Sprintf("stopped replica %d, the others %s", r.stoppedDone, strings.Join(parts, " and "))
}

// effectsOf scrapes blobref_step_effects_total of step from each process.
func effectsOf(t *testing.T, procs []*proc, step string) []float64 {
	t.Helper()
	out := make([]float64, len(procs))
	for i, pr := range procs {
		out[i] = pr.metric(t, "blobref_step_effects_total", `step="`+step+`"`)
	}
	return out
}

// checkSpread checks the replicas' side effects add up to n, each replica ran
// at least minShare of them, and each replica's counter agrees with what it
// logged (the later phases count a stopped replica's part from its log).
func checkSpread(t *testing.T, step string, procs []*proc, effects []float64, n int) {
	t.Helper()
	if s := sum(effects); int(s) != n {
		t.Errorf("%s effects across replicas: got %v (%v), want %d", step, s, effects, n)
	}
	for i, e := range effects {
		if e < minShare*float64(n) {
			t.Errorf("%s replica %d: ran %v of %d side effects, want at least %.0f%%", step, i, e, n, 100*minShare)
		}
		if l := logged(procs[i], step, ""); l.done != int(e) {
			t.Errorf("%s replica %d: logged %d side effects, its counter says %v", step, i, l.done, e)
		}
	}
}

// shares formats each replica's count and share of n.
func shares(effects []float64, n int) string {
	parts := make([]string, len(effects))
	for i, e := range effects {
		parts[i] = fmt.Sprintf("%v (%.1f%%)", e, 100*e/float64(n))
	}
	return strings.Join(parts, ", ")
}

// handledLog is what a consumer logged about the messages of one step.
type handledLog struct {
	done        int // side effects run and recorded
	redelivered int // messages handled on a second or later delivery
}

// logged reads pr's debug log: the messages of step whose upload id starts
// with prefix.
func logged(pr *proc, step, prefix string) handledLog {
	var l handledLog
	for line := range strings.SplitSeq(pr.Output(), "\n") {
		f := logFields(line)
		if f["step"] != step || f["outcome"] == "" || !strings.HasPrefix(f["id"], prefix) {
			continue
		}
		if f["outcome"] == "done" {
			l.done++
		}
		if d, _ := strconv.Atoi(f["deliveries"]); d > 1 {
			l.redelivered++
		}
	}
	return l
}

// logFields splits a log/slog text line into its unquoted key=value pairs
// (the ones this test reads have no spaces); the first of a key wins.
func logFields(line string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Fields(line) {
		k, v, ok := strings.Cut(kv, "=")
		if _, seen := out[k]; ok && !seen {
			out[k] = v
		}
	}
	return out
}

// completions counts the completed events of each upload id.
type completions struct {
	mu sync.Mutex
	n  map[string]int
}

func watchCompletions(t *testing.T, nc *nats.Conn) *completions {
	t.Helper()
	c := &completions{n: map[string]int{}}
	sub, err := nc.Subscribe(events.CompletedSubject("*"), func(m *nats.Msg) {
		id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		c.mu.Lock()
		c.n[id]++
		c.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

// await polls until every upload of batch completed at least once.
func (c *completions) await(t *testing.T, batch []upload, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		counts := c.counts(batch)
		missing := slices.IndexFunc(batch, func(u upload) bool { return counts[u.ID] == 0 })
		if missing < 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s and maybe others: not completed within %v", batch[missing].ID, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counts returns the completed events of each upload of batch.
func (c *completions) counts(batch []upload) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(batch))
	for _, u := range batch {
		out[u.ID] = c.n[u.ID]
	}
	return out
}
