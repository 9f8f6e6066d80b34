package uploadview_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/internal/uploadview"
	"github.com/blobref/blobref/pkg/events"
)

// An upload ingest recorded goes through its states as the steps record
// what they did; Get shows each step, the timeline and the events.
func TestGetFollowsAnUploadThroughItsSteps(t *testing.T) {
	t.Parallel()
	w := setup(t)
	u := w.upload("up-1", "users/1/avatar").record("alice", "key-1", time.Minute, false)

	got := w.get("up-1")
	if got.State != uploadview.StateRecorded || !maps.Equal(steps(got), map[string]bool{"recorded": true, "accepted": false, "stored": false, "completed": false}) {
		t.Fatalf("recorded: got %s %v", got.State, steps(got))
	}
	if got.Subject != "users/1/avatar" || got.Owner != "alice" || got.Size != int64(len(u.data)) || got.SHA256 != u.req.SHA256 ||
		got.Ingest == nil || got.Ingest.IdempotencyKey != "key-1" || got.Ingest.PublishedAt != nil {
		t.Errorf("recorded: got %+v, want the record's subject, owner, size, sha256 and key", got)
	}
	if len(got.Events) != 0 || len(got.Timeline) != 1 || got.Timeline[0].What != "recorded" {
		t.Errorf("recorded: got events %v, timeline %v; want none and the record", got.Events, got.Timeline)
	}

	w.exec(`UPDATE ingest_uploads SET published_at = now(), publish_count = 1 WHERE id = 'up-1'`)
	u.publish()
	got = w.get("up-1")
	if got.State != uploadview.StatePending || !steps(got)["accepted"] || steps(got)["stored"] {
		t.Fatalf("published: got %s %v, want pending and accepted", got.State, steps(got))
	}
	if len(got.Events) != 1 || got.Events[0].Subject != "uploads.requested.up-1" || got.Events[0].Stream != events.StreamName ||
		got.Events[0].Header["ce-id"][0] != "up-1" || got.Events[0].Size != len(u.data) || got.Events[0].Body != "" {
		t.Errorf("published: got events %+v, want the request with its headers, its size and no body (not JSON)", got.Events)
	}

	u.store(0)
	got = w.get("up-1")
	if s, _ := got.Step("stored"); got.State != uploadview.StateStored || !s.Done || !strings.Contains(s.Detail, "uploads/up-1") {
		t.Fatalf("stored: got %s, step %+v", got.State, s)
	}

	u.complete()
	got = w.get("up-1")
	if got.State != uploadview.StateCompleted || !maps.Equal(steps(got), map[string]bool{"recorded": true, "accepted": true, "stored": true, "completed": true}) {
		t.Fatalf("completed: got %s %v", got.State, steps(got))
	}
	if got.Reference == nil || !got.Reference.Current || got.Reference.Blob.Key != "uploads/up-1" || got.Reference.Owner != "/test" {
		t.Errorf("completed: reference %+v, want the current one of uploads/up-1", got.Reference)
	}
	var subjects []string
	for _, m := range got.Events {
		subjects = append(subjects, m.Subject)
	}
	if want := []string{"uploads.requested.up-1", "uploads.blob.stored.up-1", "uploads.completed.up-1"}; !slices.Equal(subjects, want) {
		t.Errorf("completed: events %v, want %v", subjects, want)
	}
	if body := got.Events[2].Body; !strings.Contains(body, `"key":"uploads/up-1"`) {
		t.Errorf("completed event: body %q, want its JSON reference", body)
	}
	var kinds []string
	for i, e := range got.Timeline {
		kinds = append(kinds, e.Kind+":"+e.What)
		if i > 0 && e.At.Before(got.Timeline[i-1].At) {
			t.Errorf("timeline not in time order: %v", got.Timeline)
		}
	}
	for _, want := range []string{"step:recorded", "step:accepted", "step:stored", "step:completed", "event:uploads.requested.up-1", "event:uploads.completed.up-1"} {
		if !slices.Contains(kinds, want) {
			t.Errorf("timeline %v lacks %s", kinds, want)
		}
	}
}

// An upload that only the streams know of (a producer published it over
// NATS) fails when a step dead-letters its request, and is pending again
// once the request is published after the dead letter (a re-drive).
func TestGetShowsADeadLetterUntilTheRequestIsPublishedAgain(t *testing.T) {
	t.Parallel()
	w := setup(t)
	u := w.upload("up-2", "users/2/avatar").publish()
	seq := u.deadLetter(events.ReasonClaimMissing, time.Now())

	got := w.get("up-2")
	if got.State != uploadview.StateFailed || got.DeadLetter == nil || got.DeadLetter.Reason != events.ReasonClaimMissing ||
		got.DeadLetter.Seq != seq || got.DeadLetter.Error != "it failed" {
		t.Fatalf("dead-lettered: got %s, %+v; want failed by the claim_missing letter #%d", got.State, got.DeadLetter, seq)
	}
	if got.Subject != "users/2/avatar" || got.Owner != "/test" || got.Ingest != nil || !steps(got)["accepted"] {
		t.Errorf("dead-lettered: got subject %q owner %q ingest %v steps %v; want them from the request event", got.Subject, got.Owner, got.Ingest, steps(got))
	}
	var dlq *uploadview.Message
	for i := range got.Events {
		if got.Events[i].Stream == events.DLQStreamName {
			dlq = &got.Events[i]
		}
	}
	if dlq == nil || dlq.DeadLetter == nil || dlq.Header[events.HeaderDeadReason][0] != events.ReasonClaimMissing || dlq.Size != len(u.data) {
		t.Errorf("dead-lettered: events %+v, want the dead letter with its headers and the body's size", got.Events)
	}
	if last := got.Timeline[len(got.Timeline)-1]; last.Kind != uploadview.EntryDeadLetter || last.What != events.ReasonClaimMissing || !strings.Contains(last.Detail, "it failed") {
		t.Errorf("dead-lettered: the timeline ends with %+v, want the dead letter", last)
	}

	testenv.Publish(t, w.js, u.req, fmt.Sprintf("redrive/UPLOADS_DLQ/%d", seq)) // as blobrefctl dlq redrive does
	got = w.get("up-2")
	if got.State != uploadview.StatePending || got.DeadLetter != nil || len(got.DeadLetters) != 1 {
		t.Errorf("published again: got %s, failed by %+v, %d letters; want pending, the letter kept but not failing it", got.State, got.DeadLetter, len(got.DeadLetters))
	}
	if last := got.Timeline[len(got.Timeline)-1]; last.Kind != uploadview.EntryEvent || !strings.HasSuffix(last.Detail, fmt.Sprintf("a re-drive of dead letter UPLOADS_DLQ #%d", seq)) {
		t.Errorf("published again: the timeline ends with %+v, want the re-drive", last)
	}
}

func TestGetUnknownUpload(t *testing.T) {
	t.Parallel()
	w := setup(t)
	for _, id := range []string{"nobody", "not an id", strings.Repeat("x", 129)} {
		if _, err := w.view.Get(context.Background(), id); !errors.Is(err, uploadview.ErrNotFound) {
			t.Errorf("Get(%q): got %v, want ErrNotFound", id, err)
		}
	}
}

func TestFind(t *testing.T) {
	t.Parallel()
	w := setup(t)
	w.upload("a", "users/1/avatar").record("alice", "key-a", 2*time.Minute, true)
	w.upload("b", "users/1/avatar").record("alice", "key-b", time.Minute, true)
	c := w.upload("c", "users/1/avatar").publish().store(0)
	c.complete()
	w.upload("d", "users/1_x").record("bob", "key-d", time.Minute, true)
	w.upload("e", "users/9").publish()

	ids := func(text string) []string {
		t.Helper()
		found, err := w.view.Find(context.Background(), text, 0)
		if err != nil {
			t.Fatalf("Find(%q): %v", text, err)
		}
		var out []string
		for _, u := range found {
			out = append(out, u.ID+":"+string(u.State))
		}
		return out
	}
	for text, want := range map[string][]string{
		"users/1/avatar": {"c:completed", "b:pending", "a:pending"}, // newest first
		"a":              {"a:pending"},
		"key-b":          {"b:pending"},
		"users/1/*":      {"c:completed", "b:pending", "a:pending"},
		"users/1_*":      {"d:pending"}, // "_" is no wildcard
		"e":              {"e:pending"}, // only UPLOADS knows it
		"users/9":        nil,           // nor does a subject search find it
		"nobody":         nil,
		"":               nil,
	} {
		if got := ids(text); !slices.Equal(got, want) {
			t.Errorf("Find(%q): got %v, want %v", text, got, want)
		}
	}
	found, err := w.view.Find(context.Background(), "users/1/avatar", 1)
	if err != nil || len(found) != 1 || found[0].ID != "c" {
		t.Errorf("Find with limit 1: got %v, %v; want c", found, err)
	}
}

func TestConsumersAndStreams(t *testing.T) {
	t.Parallel()
	w := setup(t)
	ctx := context.Background()
	cons, err := w.js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		Durable: events.BlobWriterConsumer.Durable, FilterSubject: events.BlobWriterConsumer.FilterSubject,
		AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 5, AckWait: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	// x delivered, nak'ed and delivered again: redelivered, awaiting its
	// ack; y and z pending.
	w.upload("x", "users/x").publish()
	fetch := func() jetstream.Msg {
		t.Helper()
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			return m
		}
		t.Fatalf("fetch: nothing came (%v)", batch.Error())
		return nil
	}
	if err := fetch().Nak(); err != nil {
		t.Fatal(err)
	}
	if m := fetch(); m.Subject() != "uploads.requested.x" {
		t.Fatalf("fetch after the nak: got %s, want x again", m.Subject())
	}
	w.upload("y", "users/y").publish()
	w.upload("z", "users/z").publish()

	got, err := w.view.Consumers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("Consumers: got %+v, want blobwriter's, refwriter's and notifier's", got)
	}
	bw, rw, nt := got[0], got[1], got[2]
	if nt.Name != "notifier" || nt.Step != events.StepNotify || !nt.Missing {
		t.Errorf("notifier: got %+v, want it missing", nt)
	}
	if bw.Name != "blobwriter" || bw.Step != events.StepBlob || bw.Missing || bw.Pending != 2 || bw.AckPending != 1 ||
		bw.Redelivered != 1 || bw.MaxDeliver != 5 || bw.Filter != "uploads.requested.>" || bw.LastActive == nil {
		t.Errorf("blobwriter: got %+v, want 2 pending, 1 awaiting its ack, 1 redelivered, max 5 deliveries", bw)
	}
	if rw.Name != "refwriter" || !rw.Missing {
		t.Errorf("refwriter: got %+v, want it missing", rw)
	}

	streams, err := w.view.Streams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(streams) != 2 || streams[0].Name != events.StreamName || streams[0].Messages != 3 || streams[0].LastSeq != 3 ||
		streams[1].Name != events.DLQStreamName || streams[1].Messages != 0 {
		t.Errorf("Streams: got %+v, want UPLOADS with 3 messages and an empty UPLOADS_DLQ", streams)
	}
}

func TestDeadLettersFilters(t *testing.T) {
	t.Parallel()
	w := setup(t)
	ctx := context.Background()
	aSeq := w.upload("a", "users/a").deadLetter(events.ReasonClaimMissing, time.Now())
	bSeq := w.upload("b", "users/b").deadLetter(events.ReasonConflict, time.Now())
	ack, err := w.js.PublishMsg(ctx, &nats.Msg{Subject: "dlq.uploads.requested.x", Data: []byte("?")})
	if err != nil {
		t.Fatal(err)
	}
	xSeq := ack.Sequence

	list := func(f uploadview.DeadLetterFilter) []uploadview.Letter {
		t.Helper()
		var out []uploadview.Letter
		if err := uploadview.DeadLetters(ctx, w.js, f, func(l uploadview.Letter) error {
			out = append(out, l)
			return nil
		}); err != nil {
			t.Fatalf("DeadLetters(%+v): %v", f, err)
		}
		return out
	}
	all := list(uploadview.DeadLetterFilter{})
	if len(all) != 3 || all[0].Seq != aSeq || all[1].Seq != bSeq || all[2].Seq != xSeq {
		t.Fatalf("all: got %+v", all)
	}
	if l := all[0]; l.Reason != events.ReasonClaimMissing || l.Step != "blob" || l.Subject != "uploads.requested.a" ||
		l.Error != "it failed" || l.Err != nil || l.UploadID() != "a" {
		t.Errorf("a: got %+v", l)
	}
	if l := all[2]; l.Err == nil || l.Subject != "uploads.requested.x" {
		t.Errorf("foreign message: got %+v, want Err set and its subject", l)
	}
	if got := list(uploadview.DeadLetterFilter{Reason: events.ReasonConflict}); len(got) != 1 || got[0].Seq != bSeq {
		t.Errorf("conflict: got %+v, want b", got)
	}
	for _, s := range []string{"uploads.requested.a", "dlq.uploads.requested.a", "uploads.requested.*"} {
		got := list(uploadview.DeadLetterFilter{Subject: s})
		if s == "uploads.requested.*" {
			if len(got) != 3 {
				t.Errorf("subject %s: got %+v, want all three", s, got)
			}
			continue
		}
		if len(got) != 1 || got[0].Seq != aSeq {
			t.Errorf("subject %s: got %+v, want a", s, got)
		}
	}
	for f, want := range map[uploadview.DeadLetterFilter][]uint64{
		{Seq: bSeq}: {bSeq},
		{Seq: bSeq, Reason: events.ReasonConflict}:     {bSeq},
		{Seq: bSeq, Reason: events.ReasonClaimMissing}: nil,
		{Seq: bSeq, Subject: "uploads.requested.a"}:    nil,
		{Seq: bSeq, Subject: "uploads.requested.>"}:    {bSeq},
		{Seq: xSeq + 1}: nil,
	} {
		var got []uint64
		for _, l := range list(f) {
			got = append(got, l.Seq)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%+v: got %v, want %v", f, got, want)
		}
	}
}

// OpenPool's transactions cannot write, and a URL whose schema lacks the
// pipeline's tables is refused with a hint.
func TestOpenPool(t *testing.T) {
	t.Parallel()
	w := setup(t)
	_, err := w.view.Pool.Exec(context.Background(), `DELETE FROM step_markers`)
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("a write through the view's pool: got %v, want a read-only transaction's refusal", err)
	}
	_, empty := testenv.NewSchema(t, "t_empty_")
	if pool, err := uploadview.OpenPool(context.Background(), empty); err == nil || !strings.Contains(err.Error(), "search_path") {
		if pool != nil {
			pool.Close()
		}
		t.Errorf("OpenPool of an empty schema: got %v, want an error pointing at the search_path", err)
	}
}
