package e2e

// The completer tests run ingest's completer in the real binaries: uploads
// that nobody is finishing complete without any client retry, and ingest
// replicas never publish one upload twice.

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// ingest SIGKILLed at ingest/after-record, with no client retry: the
// restarted ingest's completer publishes the upload once the dead
// request's claim lapses (an inline one from its outbox, a staged one with
// its dataref), and it completes with every side effect done once.
func TestCompleterFinishesAnUploadWhoseIngestCrashed(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		size int
	}{
		{"inline", 4096},
		{"staged", 2 << 20}, // above INLINE_THRESHOLD
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := newPipeline(t)
			bw := p.start("blobwriter")
			rw := p.start("refwriter")
			addr := testenv.FreeAddr(t)
			in := p.startIngest(addr, "BLOBREF_FAILPOINTS=ingest/after-record=crash")

			u := newUpload("orphan-"+c.name, c.size)
			key := "orphan-key"
			if r, err := in.tryPost(u, key); err == nil {
				t.Fatalf("POST to an ingest that crashes at ingest/after-record: got %d %s, want the connection to break", r.status, r.body)
			}
			in.AwaitCrash(t)
			id := ingestID(key)
			wantOutbox := c.name == "inline"
			if n := p.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE id = $1 AND publish_count = 0 AND (payload IS NOT NULL) = $2`, id, wantOutbox); n != 1 {
				t.Fatalf("ingest_uploads after the crash: got %d unpublished rows of %s with outbox %v, want 1", n, id, wantOutbox)
			}

			in2 := p.startIngest(addr, "COMPLETER_INTERVAL=200ms")
			if got := p.completed.AwaitIDs(t, 1, 2*time.Minute); len(got[id]) != 1 {
				t.Fatalf("completed events: got %d ids, want one event of %s", len(got), id)
			}
			st := in2.awaitState(t, "/v1/uploads/"+id, "completed")
			u.ID, u.Time = st.ID, st.CreatedAt
			p.checkInvariants([]upload{u})
			checkEffects(t, bw, rw, 1)
			if n := p.requestEvents(id); n != 1 {
				t.Errorf("request events of %s: got %d, want 1", id, n)
			}
			if n := p.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE id = $1 AND publish_count = 1 AND payload IS NULL`, id); n != 1 {
				t.Errorf("ingest_uploads: got %d rows of %s published once with the outbox emptied, want 1", n, id)
			}
			if got := in2.metric(t, "blobref_ingest_completer_resumed_total", `kind="unpublished"`); got != 1 {
				t.Errorf("completer_resumed_total{unpublished}: got %v, want 1", got)
			}
			if got := in2.metric(t, "blobref_ingest_completer_found_total", `kind="unpublished"`); got != 1 {
				t.Errorf("completer_found_total{unpublished}: got %v, want 1", got)
			}
			if !logHas(in2.Output(), `msg="resumed upload"`, "upload_id="+id, "kind=unpublished") {
				t.Errorf("ingest's log has no line for the resumed upload %s", id)
			}
			if d := testenv.DeadLetters(t, p.js); len(d) != 0 {
				t.Errorf("dead letters: got %v, want none", d)
			}
		})
	}
}

// blobwriter stopped past the horizon, then started: the completer
// publishes the pending upload's request again, as a new message with the
// bytes of the first, at most once per horizon; the upload completes with
// its side effects done once, and the completer publishes it no more.
func TestCompleterRepublishesAStalledUpload(t *testing.T) {
	t.Parallel()
	const horizon = 5 * time.Second
	p := newPipeline(t)
	p.start("blobwriter").Stop(t)
	rw := p.start("refwriter")
	in := p.startIngest("", "COMPLETER_INTERVAL=200ms", "COMPLETER_HORIZON="+horizon.String(), "REDRIVE_AFTER=1s")

	u := newUpload("stalled", 4096)
	r := in.post(t, u, "stalled-key")
	st := r.state(t, http.StatusAccepted)
	id := st.ID
	resumed := func() float64 { return in.metric(t, "blobref_ingest_completer_resumed_total", `kind="stalled"`) }
	deadline := time.Now().Add(time.Minute)
	for resumed() < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the completer did not publish the stalled upload %s again within a minute", id)
		}
		time.Sleep(50 * time.Millisecond)
	}

	bw := p.start("blobwriter")
	p.completed.AwaitIDs(t, 1, 2*time.Minute)
	st = in.awaitState(t, "/v1/uploads/"+id, "completed")
	u.ID, u.Time = st.ID, st.CreatedAt

	// Nothing more once completed: let a horizon pass after the last
	// publish, and two more rounds run.
	times := p.requestTimes(id)
	last := times[len(times)-1]
	rounds := func() float64 { return in.metric(t, "blobref_ingest_completer_rounds_total") }
	deadline = time.Now().Add(time.Minute)
	for time.Now().Before(last.Add(horizon)) {
		if time.Now().After(deadline) {
			t.Fatal("a horizon did not pass within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for n := rounds() + 2; rounds() < n; {
		if time.Now().After(deadline) {
			t.Fatal("the completer ran no rounds within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}

	times = p.requestTimes(id)
	n := resumed()
	t.Logf("request events of the stalled upload: %d, at %v", len(times), times)
	if len(times) != 1+int(n) || n < 1 {
		t.Errorf("request events of %s: got %d with %v resumes, want the first and one per resume", id, len(times), n)
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < horizon {
			t.Errorf("request events %d and %d of %s: %v apart, want at least the horizon %v", i-1, i, id, gap, horizon)
		}
	}
	if ev := p.requestEvent(id); string(ev.Data) != string(u.Data) || !ev.Time.Equal(u.Time) {
		t.Errorf("re-published request: got %d bytes at %v, want the upload's %d bytes at %v", len(ev.Data), ev.Time, len(u.Data), u.Time)
	}
	if !logHas(in.Output(), `msg="resumed upload"`, "upload_id="+id, "kind=stalled") {
		t.Errorf("ingest's log has no line for the resumed upload %s", id)
	}
	p.checkInvariants([]upload{u})
	checkEffects(t, bw, rw, 1)
	if d := testenv.DeadLetters(t, p.js); len(d) != 0 {
		t.Errorf("dead letters: got %v, want none", d)
	}
}

// Three ingest replicas run the completer every 50ms while one of them
// records uploads and fails to publish them (ingest/after-record=error):
// every upload is published once. The publishes JetStream acknowledged,
// counted by the three, are one per upload: its de-duplication would hide a
// second publish in the stream, the acknowledgements do not.
func TestCompleterReplicasPublishEachUploadOnce(t *testing.T) {
	t.Parallel()
	const n = 40
	p := newPipeline(t)
	fast := "COMPLETER_INTERVAL=50ms"
	replicas := []*proc{
		p.startIngest("", fast, "BLOBREF_FAILPOINTS=ingest/after-record=error"),
		p.startIngest("", fast),
		p.startIngest("", fast),
	}

	uploads := make([]upload, n)
	var wg sync.WaitGroup
	for i := range uploads {
		uploads[i] = newUpload(fmt.Sprintf("replica%02d", i), 1024+i)
		wg.Go(func() {
			r, err := replicas[0].tryPost(uploads[i], fmt.Sprintf("replica-key-%02d", i))
			if err != nil || r.status != http.StatusServiceUnavailable {
				t.Errorf("POST %d to the replica that fails after recording: got %d %s (%v), want 503", i, r.status, r.body, err)
			}
		})
	}
	wg.Wait()
	// Wait for the replicas to count n resumes (a replica counts one once
	// the upload's publish is recorded), then compare what they counted.
	count := func(family, match string) (sum float64, each []string) {
		for _, in := range replicas {
			v := in.metric(t, family, match)
			sum += v
			each = append(each, fmt.Sprint(v))
		}
		return sum, each
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if resumed, _ := count("blobref_ingest_completer_resumed_total", `kind="unpublished"`); resumed >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("published uploads: got %d after a minute, want %d", p.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE publish_count > 0`), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resumed, each := count("blobref_ingest_completer_resumed_total", `kind="unpublished"`)
	acks, _ := count("blobref_ingest_publishes_total", "")
	t.Logf("resumed by each replica: %s", strings.Join(each, ", "))
	if resumed != n || acks != n {
		t.Errorf("across the replicas: %v resumed and %v publishes acknowledged, want %d each", resumed, acks, n)
	}
	if got := p.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE publish_count = 1 AND payload IS NULL`); got != n {
		t.Errorf("records published once: got %d, want %d", got, n)
	}

	bw := p.start("blobwriter")
	rw := p.start("refwriter")
	p.completed.AwaitIDs(t, n, 2*time.Minute)
	for i := range uploads {
		id := ingestID(fmt.Sprintf("replica-key-%02d", i))
		if c := p.requestEvents(id); c != 1 {
			t.Errorf("request events of %s: got %d, want 1", id, c)
		}
		uploads[i].ID, uploads[i].Time = id, p.createdAt(id)
	}
	p.checkInvariants(uploads)
	checkEffects(t, bw, rw, n)
	if d := testenv.DeadLetters(t, p.js); len(d) != 0 {
		t.Errorf("dead letters: got %v, want none", d)
	}
}

// requestTimes returns when UPLOADS stored each request event of upload id,
// oldest first.
func (p *pipeline) requestTimes(id string) []time.Time {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := p.js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.RequestedSubject(id)},
	})
	if err != nil {
		p.t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(int(info.NumPending))
	if err != nil {
		p.t.Fatal(err)
	}
	var out []time.Time
	for msg := range batch.Messages() {
		md, err := msg.Metadata()
		if err != nil {
			p.t.Fatal(err)
		}
		out = append(out, md.Timestamp)
	}
	if err := batch.Error(); err != nil {
		p.t.Fatal(err)
	}
	if len(out) == 0 {
		p.t.Fatalf("no request event of %s in UPLOADS", id)
	}
	return out
}

// createdAt is the event time ingest gave upload id.
func (p *pipeline) createdAt(id string) time.Time {
	p.t.Helper()
	var at time.Time
	if err := p.pg.Pool.QueryRow(context.Background(), `SELECT created_at FROM ingest_uploads WHERE id = $1`, id).Scan(&at); err != nil {
		p.t.Fatalf("record of %s: %v", id, err)
	}
	return at.UTC()
}

// logHas reports whether a line of log holds each of parts.
func logHas(log string, parts ...string) bool {
	for line := range strings.SplitSeq(log, "\n") {
		if matchesAll(line, parts) {
			return true
		}
	}
	return false
}

func matchesAll(line string, parts []string) bool {
	for _, part := range parts {
		if !strings.Contains(line, part) {
			return false
		}
	}
	return true
}
