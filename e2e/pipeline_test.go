package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// 200 request events → 200 objects, 200 reference rows, 200 completed
// events; every request published again → nothing rewritten, and every
// completed event emitted again.
func TestEveryUploadCompletesOnceAndRepublishReemits(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	bw := p.start("blobwriter")
	rw := p.start("refwriter")

	const n = 200
	uploads := make([]upload, n)
	for i := range uploads {
		uploads[i] = newUpload(fmt.Sprintf("up%03d", i), 1024+i*37)
		p.publish(uploads[i], uploads[i].ID)
	}
	got := p.awaitCompleted(n, 2*time.Minute)
	if len(got) != n {
		t.Fatalf("completed: got %d distinct ids, want %d", len(got), n)
	}
	p.checkInvariants(uploads)
	objects, rows := p.statObjects(ids(uploads)), p.rowVersions()

	for _, u := range uploads {
		p.publish(u, "") // a new message for the same upload
	}
	again := p.awaitCompleted(n, 2*time.Minute)
	for _, u := range uploads {
		if again[u.ID] != 1 {
			t.Errorf("%s: completed re-emitted %d times, want 1", u.ID, again[u.ID])
		}
	}
	if after := p.statObjects(ids(uploads)); !maps.Equal(after, objects) {
		t.Errorf("objects were rewritten by the republish")
	}
	if after := p.rowVersions(); !maps.Equal(after, rows) {
		t.Errorf("reference rows were rewritten by the republish")
	}
	p.checkInvariants(uploads)
	if w := bw.metric(t, "blobref_step_effects_total", `step="blob"`); w != n {
		t.Errorf("blob writes: got %v, want %d", w, n)
	}
	if w := rw.metric(t, "blobref_step_effects_total", `step="ref"`); w != n {
		t.Errorf("reference writes: got %v, want %d", w, n)
	}
	if s := bw.metric(t, "blobref_step_messages_total", `step="blob"`, `outcome="skipped"`); s != n {
		t.Errorf("blob skips: got %v, want %d", s, n)
	}
	if d := testenv.DeadLetters(t, p.js); len(d) != 0 {
		t.Errorf("dead letters: got %v, want none", d)
	}
}

// refwriter down while events pass blobwriter, then up → all complete; a
// request republished after only its blob step finished → the blob is not
// rewritten, the reference is written.
func TestRefwriterCatchesUpAndRepublishResumes(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	bw := p.start("blobwriter")

	uploads := make([]upload, 50)
	for i := range uploads {
		uploads[i] = newUpload(fmt.Sprintf("late%02d", i), 2048)
		p.publish(uploads[i], uploads[i].ID)
	}
	p.awaitMarkers("blob", 50)
	if n := p.pg.Count(t, `SELECT count(*) FROM upload_refs`); n != 0 {
		t.Fatalf("reference rows with refwriter down: got %d, want 0", n)
	}
	objects := p.statObjects(ids(uploads))

	// Republish half of them while only their blob step is done: blobwriter
	// skips each (its marker exists), re-emitting the recorded result.
	for _, u := range uploads[:25] {
		p.publish(u, "")
	}
	bw.awaitMetric(t, 25, "blobref_step_messages_total", `step="blob"`, `outcome="skipped"`)
	p.awaitMarkers("blob", 50)

	rw := p.start("refwriter")
	got := p.awaitCompleted(75, time.Minute) // 50 + 25 re-emitted
	for _, u := range uploads {
		want := 1
		if u.ID < "late25" {
			want = 2
		}
		if got[u.ID] != want {
			t.Errorf("%s: %d completed events, want %d", u.ID, got[u.ID], want)
		}
	}
	if after := p.statObjects(ids(uploads)); !maps.Equal(after, objects) {
		t.Errorf("objects were rewritten")
	}
	p.checkInvariants(uploads)
	if w := rw.metric(t, "blobref_step_effects_total", `step="ref"`); w != 50 {
		t.Errorf("reference writes: got %v, want 50", w)
	}
}

// SIGKILL right after the blob write, before its marker: the restarted
// blobwriter finds the object, records it without writing again, and the
// upload completes once with one object and one reference row.
func TestCrashBetweenBlobWriteAndMarker(t *testing.T) {
	t.Parallel()
	forEachBucket(t, func(t *testing.T, p *pipeline, b bucket) {
		b.start("refwriter")
		bw := b.start("blobwriter", "BLOBREF_FAILPOINTS=blob/after-effect=crash", "CONSUMER_CONCURRENCY=1")

		u := newUpload("crash1", 4096)
		p.publish(u, u.ID)
		bw.AwaitCrash(t)
		if n := p.pg.Count(t, `SELECT count(*) FROM step_markers`); n != 0 {
			t.Fatalf("markers after the crash: got %d, want 0", n)
		}
		before := b.objects([]string{u.ID}) // the write happened
		if len(before) != 1 {
			t.Fatalf("objects after the crash: got %v, want the object of %s", before, u.ID)
		}

		bw2 := b.start("blobwriter")
		if got := p.awaitCompleted(1, time.Minute); got[u.ID] != 1 {
			t.Fatalf("completed: got %v, want %s once", got, u.ID)
		}
		if after := b.objects([]string{u.ID}); !maps.Equal(after, before) {
			t.Errorf("object rewritten after restart: got %v, want %v", after, before)
		}
		if w, ok := b.writes(); ok && w != 1 {
			t.Errorf("object writes the store served: got %d, want 1", w)
		}
		b.checkInvariants([]upload{u})
		if w := bw2.metric(t, "blobref_step_effects_total", `step="blob"`); w != 1 {
			t.Errorf("restarted blobwriter side effects: got %v, want 1 (it finds the object, it does not write it)", w)
		}
		if d := testenv.DeadLetters(t, p.js); len(d) != 0 {
			t.Errorf("dead letters: got %v, want none", d)
		}
	})
}

// Two replicas of each consumer on the same durable consumers, with every
// request published twice at once and settlement failing on purpose so
// that deliveries repeat: every invariant still holds and each side effect
// ran once in total.
func TestReplicasWithDuplicatedDeliveries(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	chaos := []string{
		"CONSUMER_CONCURRENCY=4",
		// Overlap the duplicates, and fail a share of acks and publishes so
		// that messages come back after their step finished.
		"BLOBREF_FAILPOINTS=blob/before-effect=delay(20ms);blob/before-ack=30%error;ref/after-publish=30%error;ref/before-ack=20%error",
	}
	procs := []*proc{
		p.start("blobwriter", chaos...), p.start("blobwriter", chaos...),
		p.start("refwriter", chaos...), p.start("refwriter", chaos...),
	}

	const n = 100
	uploads := make([]upload, n)
	for i := range uploads {
		uploads[i] = newUpload(fmt.Sprintf("dup%03d", i), 512+i)
		p.publish(uploads[i], uploads[i].ID)
		p.publish(uploads[i], "") // the duplicate
	}
	p.completed.AwaitIDs(t, n, 3*time.Minute)
	// Let the retries of the failed settlements run out.
	p.awaitMarkers("ref", n)
	p.checkInvariants(uploads)

	var blobWrites, refWrites, blobDone []float64
	for _, pr := range procs {
		switch pr.Name {
		case "blobwriter":
			blobWrites = append(blobWrites, pr.metric(t, "blobref_step_effects_total", `step="blob"`))
			blobDone = append(blobDone, pr.metric(t, "blobref_step_messages_total", `step="blob"`, `outcome="done"`))
		case "refwriter":
			refWrites = append(refWrites, pr.metric(t, "blobref_step_effects_total", `step="ref"`))
		}
	}
	if s := sum(blobWrites); s != n {
		t.Errorf("blob writes across replicas: got %v (%v), want %d", s, blobWrites, n)
	}
	if s := sum(refWrites); s != n {
		t.Errorf("reference writes across replicas: got %v (%v), want %d", s, refWrites, n)
	}
	if slices.Contains(blobDone, 0) {
		t.Logf("note: one blobwriter replica did no work: %v", blobDone)
	}
	if d := testenv.DeadLetters(t, p.js); len(d) != 0 {
		t.Errorf("dead letters: got %v, want none", d)
	}
}

func sum(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s
}

// The same id with other bytes is refused: dead letter "conflict" naming
// the stored sha256, the original blob and reference untouched.
func TestConflictIsRefused(t *testing.T) {
	t.Parallel()
	forEachBucket(t, func(t *testing.T, p *pipeline, b bucket) {
		b.start("blobwriter")
		b.start("refwriter")

		u := newUpload("conflict1", 1000)
		p.publish(u, u.ID)
		p.awaitCompleted(1, time.Minute)
		objects, rows := b.objects([]string{u.ID}), p.rowVersions()

		other := u
		other.Data = []byte("entirely different bytes")
		p.publish(other, "conflict1-again")
		d := testenv.AwaitDeadLetters(t, p.js, 1, time.Minute)[events.RequestedSubject(u.ID)]
		if d.Reason != events.ReasonConflict || d.Step != "blob" {
			t.Errorf("dead letter: got %+v, want reason conflict at step blob", d)
		}
		if !strings.Contains(d.Error, u.sha()) {
			t.Errorf("dead letter error %q: want it to name the stored sha256 %s", d.Error, u.sha())
		}
		b.checkInvariants([]upload{u})
		if after := b.objects([]string{u.ID}); !maps.Equal(after, objects) {
			t.Errorf("object touched by the conflicting event: got %v, want %v", after, objects)
		}
		if w, ok := b.writes(); ok && w != 1 {
			t.Errorf("object writes the store served: got %d, want 1", w)
		}
		if after := p.rowVersions(); !maps.Equal(after, rows) {
			t.Errorf("reference touched by the conflicting event")
		}
	})
}

// Poison input goes to the dead-letter stream with a reason, and the
// consumer keeps processing the events behind it.
func TestPoisonIsDeadLetteredAndTheRestFlows(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	p.start("blobwriter", "CONSUMER_CONCURRENCY=1", "MAX_INLINE_SIZE=4096")
	p.start("refwriter")

	good := func(id string) nats.Header {
		u := newUpload(id, 10)
		msg, err := u.event(t).Msg(id)
		if err != nil {
			t.Fatal(err)
		}
		return msg.Header
	}
	with := func(id string, edit func(h nats.Header)) *nats.Msg {
		h := good(id)
		edit(h)
		return &nats.Msg{Subject: events.RequestedSubject(id), Header: h, Data: newUpload(id, 10).Data}
	}
	poison := map[string]struct {
		msg    *nats.Msg
		reason string
	}{
		"not-cloudevents": {&nats.Msg{Subject: events.RequestedSubject("p1"), Data: []byte(`{"hello":"world"}`)}, events.ReasonMalformed},
		"missing-id":      {with("p2", func(h nats.Header) { h.Del("ce-id") }), events.ReasonMalformed},
		"bad-percent":     {with("p3", func(h nats.Header) { h.Set("ce-subject", "users/%zz") }), events.ReasonMalformed},
		"unknown-type":    {with("p4", func(h nats.Header) { h.Set("ce-type", "io.example.other") }), events.ReasonUnknownType},
		"bad-digest":      {with("p5", func(h nats.Header) { h.Set("ce-sha256", "xyz") }), events.ReasonInvalid},
		"id-not-subject":  {with("p6", func(h nats.Header) { h.Set("ce-id", "someone-else") }), events.ReasonInvalid},
		"wrong-digest":    {with("p7", func(h nats.Header) { h.Set("ce-sha256", newUpload("x", 5).sha()) }), events.ReasonDigestMismatch},
		"oversize": {func() *nats.Msg {
			m := with("p8", func(nats.Header) {})
			m.Data = make([]byte, 8192)
			return m
		}(), events.ReasonTooLarge},
		"structured-garbage": {&nats.Msg{Subject: events.RequestedSubject("p9"),
			Header: nats.Header{"Content-Type": []string{"application/cloudevents+json"}}, Data: []byte(`{"specversion":`)}, events.ReasonMalformed},
	}
	for _, c := range poison {
		testenv.PublishMsg(t, p.js, c.msg)
	}
	ok := newUpload("after-poison", 100)
	p.publish(ok, ok.ID)

	dead := testenv.AwaitDeadLetters(t, p.js, len(poison), time.Minute)
	for name, c := range poison {
		d, found := dead[c.msg.Subject]
		if !found {
			t.Errorf("%s: no dead letter", name)
			continue
		}
		if d.Reason != c.reason {
			t.Errorf("%s: reason %q, want %q (error %q)", name, d.Reason, c.reason, d.Error)
		}
		if d.Error == "" || d.Deliveries != 1 {
			t.Errorf("%s: got %+v, want an error text after one delivery", name, d)
		}
	}
	if got := p.awaitCompleted(1, time.Minute); got[ok.ID] != 1 {
		t.Errorf("completed: got %v, want %s", got, ok.ID)
	}
	p.checkInvariants([]upload{ok})
}

// An older event for a subject processed after a newer one leaves the
// current reference on the newer.
func TestCurrentReferenceMovesForwardOnly(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	p.start("blobwriter")
	p.start("refwriter")

	now := time.Now().UTC().Truncate(time.Microsecond)
	newer, older := newUpload("newer", 100), newUpload("older", 100)
	newer.Subject, older.Subject = "users/7/avatar", "users/7/avatar"
	newer.Time, older.Time = now, now.Add(-time.Hour)

	p.publish(newer, newer.ID)
	p.awaitCompleted(1, time.Minute)
	p.publish(older, older.ID)
	p.awaitCompleted(1, time.Minute)
	if cur := p.current("users/7/avatar"); cur != "newer" {
		t.Errorf("current reference: got %q, want newer", cur)
	}

	newest := newUpload("newest", 100)
	newest.Subject, newest.Time = "users/7/avatar", now.Add(time.Minute)
	p.publish(newest, newest.ID)
	p.awaitCompleted(1, time.Minute)
	if cur := p.current("users/7/avatar"); cur != "newest" {
		t.Errorf("current reference: got %q, want newest", cur)
	}
	// Replaying the old event changes nothing.
	p.publish(older, "")
	p.awaitCompleted(1, time.Minute)
	if cur := p.current("users/7/avatar"); cur != "newest" {
		t.Errorf("current reference after replay: got %q, want newest", cur)
	}
	p.checkInvariants([]upload{newer, older, newest})
}

// current is the current reference of subject of the uploads' owner, their
// source /e2e.
func (p *pipeline) current(subject string) string {
	p.t.Helper()
	var id string
	if err := p.pg.Pool.QueryRow(context.Background(), `SELECT upload_id FROM subject_refs WHERE owner = '/e2e' AND subject = $1`, subject).Scan(&id); err != nil {
		p.t.Fatalf("current reference of %s: %v", subject, err)
	}
	return id
}

// Claim-checked bytes (in a JetStream Object Store bucket, referenced by
// dataref) and structured-mode events flow like inline ones.
func TestClaimCheckAndStructuredMode(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	p.start("blobwriter")
	p.start("refwriter")

	big := newUpload("claimed", 3<<20)
	p.publishClaimChecked(big)

	structured := newUpload("structured", 300)
	sev := structured.event(t)
	ce, err := sev.CloudEvent()
	if err != nil {
		t.Fatal(err)
	}
	body, err := ce.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	testenv.PublishMsg(t, p.js, &nats.Msg{
		Subject: events.RequestedSubject(structured.ID),
		Header:  nats.Header{"Content-Type": []string{"application/cloudevents+json"}, "Nats-Msg-Id": []string{structured.ID}},
		Data:    body,
	})

	got := p.awaitCompleted(2, time.Minute)
	if got[big.ID] != 1 || got[structured.ID] != 1 {
		t.Errorf("completed: got %v, want both once", got)
	}
	p.checkInvariants([]upload{big, structured})
}
