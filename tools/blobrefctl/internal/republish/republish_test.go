package republish_test

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
	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/internal/uploadview"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/blobrefctl/internal/republish"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is one test's JetStream with the pipeline's streams.
type env struct {
	t  *testing.T
	js jetstream.JetStream
}

func setup(t *testing.T) *env {
	t.Helper()
	_, js := testenv.StartNATS(t).Connect()
	return &env{t: t, js: js}
}

// request builds the request event of upload id with body data.
func (e *env) request(id, data string) *nats.Msg {
	e.t.Helper()
	ev, err := events.NewRequested(events.Request{
		ID: id, Source: "/test", Subject: "users/" + id, ContentType: "text/plain", Data: []byte(data),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	msg, err := ev.Msg(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return msg
}

// publish stores msg (a fresh Nats-Msg-Id unless it has one) and returns
// its sequence and the time the stream stored it.
func (e *env) publish(msg *nats.Msg) (uint64, time.Time) {
	e.t.Helper()
	ctx := context.Background()
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	if msg.Header.Get(events.HeaderMsgID) == "" {
		msg.Header.Set(events.HeaderMsgID, nats.NewInbox())
	}
	ack, err := e.js.PublishMsg(ctx, msg)
	if err != nil {
		e.t.Fatalf("publish %s: %v", msg.Subject, err)
	}
	if ack.Duplicate {
		e.t.Fatalf("publish %s: a duplicate", msg.Subject)
	}
	return ack.Sequence, e.get(ack.Stream, ack.Sequence).Time
}

func (e *env) get(stream string, seq uint64) *jetstream.RawStreamMsg {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, stream)
	if err != nil {
		e.t.Fatal(err)
	}
	raw, err := s.GetMsg(ctx, seq)
	if err != nil {
		e.t.Fatalf("%s #%d: %v", stream, seq, err)
	}
	return raw
}

// messages returns every message of stream, in order.
func (e *env) messages(stream string) []*jetstream.RawStreamMsg {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, stream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, raw)
	}
	return out
}

// withoutNats returns h without the headers that start with Nats-
// (Nats-Msg-Id, Nats-Expected-Stream), for comparing headers.
func withoutNats(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		if !strings.HasPrefix(k, "Nats-") {
			out[k] = v
		}
	}
	return out
}

func sameHeaders(a, b nats.Header) bool {
	return maps.EqualFunc(a, b, slices.Equal)
}

func TestReplaySinceRepublishesLaterEventsOnceWithNewMsgIDs(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.publish(e.request("early", "e"))
	b := e.request("b", "bee")
	bSeq, bTime := e.publish(b)
	e.publish(&nats.Msg{Subject: events.CompletedSubject("b"), Data: []byte("{}")})
	c := e.request("c", "sea")
	cSeq, _ := e.publish(c)

	var got []republish.Replayed
	n, err := republish.Replay{
		Selection: republish.Selection{Subject: "uploads.requested.>", Since: bTime},
		RunID:     "r1",
	}.Run(context.Background(), e.js, func(r republish.Replayed) { got = append(got, r) })
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n != 2 || len(got) != 2 {
		t.Fatalf("replayed: got %d (%+v), want b and c", n, got)
	}
	for i, want := range []struct {
		msg *nats.Msg
		seq uint64
	}{{b, bSeq}, {c, cSeq}} {
		r := got[i]
		wantID := fmt.Sprintf("replay-r1/UPLOADS/%d", want.seq)
		if r.Subject != want.msg.Subject || r.Seq != want.seq || r.MsgID != wantID || r.NewSeq == 0 || r.Duplicate {
			t.Errorf("replayed #%d: got %+v, want %s #%d as a new message with id %s", i, r, want.msg.Subject, want.seq, wantID)
			continue
		}
		raw := e.get(events.StreamName, r.NewSeq)
		if raw.Subject != want.msg.Subject || string(raw.Data) != string(want.msg.Data) {
			t.Errorf("new message #%d: got %s %q, want %s %q", r.NewSeq, raw.Subject, raw.Data, want.msg.Subject, want.msg.Data)
		}
		if got := raw.Header.Get(events.HeaderMsgID); got != wantID {
			t.Errorf("new message #%d: Nats-Msg-Id %q, want %q", r.NewSeq, got, wantID)
		}
		if !sameHeaders(withoutNats(raw.Header), withoutNats(want.msg.Header)) {
			t.Errorf("new message #%d: headers %v, want %v", r.NewSeq, raw.Header, want.msg.Header)
		}
		if _, err := events.Decode(raw.Subject, raw.Header, raw.Data); err != nil {
			t.Errorf("new message #%d does not decode: %v", r.NewSeq, err)
		}
	}
	// The replay stopped at the stream's end when it began: its own
	// messages, which its filter matches, were not replayed again.
	if got := len(e.messages(events.StreamName)); got != 6 {
		t.Errorf("UPLOADS: got %d messages, want 6 (4 + 2 replayed)", got)
	}
}

func TestReplayUntilStopsBeforeIt(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, aTime := e.publish(e.request("a", "a"))
	_, bTime := e.publish(e.request("b", "b"))
	e.publish(e.request("c", "c"))

	var got []string
	n, err := republish.Replay{
		Selection: republish.Selection{Subject: "uploads.requested.>", Since: aTime, Until: bTime.Add(time.Nanosecond)},
	}.Run(context.Background(), e.js, func(r republish.Replayed) { got = append(got, r.Subject) })
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if want := []string{"uploads.requested.a", "uploads.requested.b"}; n != 2 || !slices.Equal(got, want) {
		t.Errorf("replayed: got %d %v, want %v", n, got, want)
	}
}

func TestReplayLastTakesTheLatestOfEachSubject(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.publish(e.request("a", "first"))
	a2 := e.request("a", "second")
	a2.Header.Del(events.HeaderMsgID)
	a2Seq, _ := e.publish(a2)
	bSeq, _ := e.publish(e.request("b", "b"))

	var got []uint64
	var a3Seq uint64
	if _, err := (republish.Replay{Selection: republish.Selection{Subject: "uploads.requested.a", Last: true}}).Run(
		context.Background(), e.js, func(r republish.Replayed) { got, a3Seq = append(got, r.Seq), r.NewSeq }); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !slices.Equal(got, []uint64{a2Seq}) {
		t.Errorf("one subject: replayed %v, want [%d]", got, a2Seq)
	}

	// Now the latest of a is the replayed message.
	got = nil
	if _, err := (republish.Replay{Selection: republish.Selection{Subject: "uploads.requested.>", Last: true}}).Run(
		context.Background(), e.js, func(r republish.Replayed) { got = append(got, r.Seq) }); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !slices.Equal(got, []uint64{bSeq, a3Seq}) {
		t.Errorf("every subject: replayed %v, want [%d %d]", got, bSeq, a3Seq)
	}
}

func TestReplayDryRunPublishesNothing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, at := e.publish(e.request("a", "a"))
	var got []republish.Replayed
	n, err := republish.Replay{Selection: republish.Selection{Subject: "uploads.>", Since: at}, DryRun: true}.Run(
		context.Background(), e.js, func(r republish.Replayed) { got = append(got, r) })
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n != 1 || len(got) != 1 || got[0].NewSeq != 0 || got[0].Subject != "uploads.requested.a" {
		t.Errorf("dry run: got %d %+v, want uploads.requested.a reported, not published", n, got)
	}
	if m := len(e.messages(events.StreamName)); m != 1 {
		t.Errorf("UPLOADS: got %d messages after a dry run, want 1", m)
	}
}

func TestReplayOfNothingReturns(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sel := republish.Selection{Subject: "uploads.requested.>", Last: true}
	if n, err := (republish.Replay{Selection: sel}).Run(ctx, e.js, nil); n != 0 || err != nil {
		t.Errorf("empty stream: got %d, %v, want 0, nil", n, err)
	}
	e.publish(e.request("a", "a"))
	sel.Subject = "uploads.requested.none"
	if n, err := (republish.Replay{Selection: sel}).Run(ctx, e.js, nil); n != 0 || err != nil {
		t.Errorf("no match: got %d, %v, want 0, nil", n, err)
	}
	sel = republish.Selection{Subject: "uploads.>", Since: time.Now().Add(time.Hour)}
	if n, err := (republish.Replay{Selection: sel}).Run(ctx, e.js, nil); n != 0 || err != nil {
		t.Errorf("since the future: got %d, %v, want 0, nil", n, err)
	}
}

func TestReplayRefusesABadSelection(t *testing.T) {
	t.Parallel()
	e := setup(t)
	now := time.Now()
	for _, sel := range []republish.Selection{
		{},
		{Subject: "uploads.>", Last: true, Since: now},
		{Subject: "uploads.>", Since: now, Until: now},
	} {
		if _, err := (republish.Replay{Selection: sel}).Run(context.Background(), e.js, nil); err == nil {
			t.Errorf("%+v: got no error", sel)
		}
	}
}

// deadLetter stores the dead letter of orig with reason and returns its
// sequence in UPLOADS_DLQ.
func (e *env) deadLetter(orig *nats.Msg, reason string) uint64 {
	e.t.Helper()
	d := events.DeadLetter{Reason: reason, Step: "blob", Subject: orig.Subject, Stream: events.StreamName, Deliveries: 1, Sequence: 7, Error: "it failed"}
	seq, _ := e.publish(events.DeadLetterMsg(d, orig.Header, orig.Data, ""))
	return seq
}

func TestRedriveRepublishesTheOriginalThenDeletesTheDeadLetter(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.request("a", "aaa")
	b := e.request("b", "bbb")
	c := &nats.Msg{Subject: events.BlobStoredSubject("c"), Header: nats.Header{"ce-id": {"c"}}, Data: []byte(`{"blob":1}`)}
	aSeq := e.deadLetter(a, events.ReasonClaimMissing)
	bSeq := e.deadLetter(b, events.ReasonConflict)
	cSeq := e.deadLetter(c, events.ReasonClaimMissing)
	foreignSeq, _ := e.publish(&nats.Msg{Subject: "dlq.uploads.requested.x", Data: []byte("?")})

	var got []republish.Redriven
	n, err := republish.Redrive{DeadLetterFilter: uploadview.DeadLetterFilter{Reason: events.ReasonClaimMissing}}.Run(
		context.Background(), e.js, func(r republish.Redriven) { got = append(got, r) })
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n != 2 || len(got) != 2 {
		t.Fatalf("re-driven: got %d %+v, want a and c", n, got)
	}
	for i, want := range []struct {
		msg *nats.Msg
		seq uint64
	}{{a, aSeq}, {c, cSeq}} {
		r := got[i]
		wantID := fmt.Sprintf("redrive/UPLOADS_DLQ/%d", want.seq)
		if r.Seq != want.seq || r.Subject != want.msg.Subject || r.MsgID != wantID || r.NewSeq == 0 || r.Skipped != nil {
			t.Errorf("re-driven #%d: got %+v, want UPLOADS_DLQ #%d to %s with id %s", i, r, want.seq, want.msg.Subject, wantID)
			continue
		}
		raw := e.get(events.StreamName, r.NewSeq)
		if raw.Subject != want.msg.Subject || string(raw.Data) != string(want.msg.Data) || raw.Header.Get(events.HeaderMsgID) != wantID {
			t.Errorf("republished #%d: got %s %q id %q, want %s %q id %s", r.NewSeq, raw.Subject, raw.Data, raw.Header.Get(events.HeaderMsgID), want.msg.Subject, want.msg.Data, wantID)
		}
		if !sameHeaders(withoutNats(raw.Header), withoutNats(want.msg.Header)) {
			t.Errorf("republished #%d: headers %v, want the original's %v (no Blobref-Dead-*)", r.NewSeq, raw.Header, want.msg.Header)
		}
	}
	var left []uint64
	for _, raw := range e.messages(events.DLQStreamName) {
		left = append(left, raw.Sequence)
	}
	if want := []uint64{bSeq, foreignSeq}; !slices.Equal(left, want) {
		t.Errorf("UPLOADS_DLQ holds %v, want %v (the conflict and the foreign message)", left, want)
	}

	// By original subject; then everything, which skips what blobref did
	// not write.
	n, err = republish.Redrive{DeadLetterFilter: uploadview.DeadLetterFilter{Subject: "uploads.requested.b"}}.Run(context.Background(), e.js, nil)
	if n != 1 || err != nil {
		t.Errorf("re-drive of uploads.requested.b: got %d, %v, want 1, nil", n, err)
	}
	got = nil
	n, err = republish.Redrive{}.Run(context.Background(), e.js, func(r republish.Redriven) { got = append(got, r) })
	if n != 0 || err != nil || len(got) != 1 || got[0].Skipped == nil || got[0].Seq != foreignSeq {
		t.Errorf("re-drive of the rest: got %d, %v, %+v; want the foreign message skipped", n, err, got)
	}
	if left := e.messages(events.DLQStreamName); len(left) != 1 {
		t.Errorf("UPLOADS_DLQ: got %d messages, want the foreign one", len(left))
	}
}

func TestRedriveDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	seq := e.deadLetter(e.request("a", "a"), events.ReasonRetriesExhausted)
	var got []republish.Redriven
	n, err := republish.Redrive{DryRun: true}.Run(context.Background(), e.js, func(r republish.Redriven) { got = append(got, r) })
	if err != nil || n != 1 || len(got) != 1 || got[0].Seq != seq || got[0].NewSeq != 0 || got[0].Reason != events.ReasonRetriesExhausted {
		t.Fatalf("dry run: got %d, %v, %+v", n, err, got)
	}
	if m := len(e.messages(events.StreamName)); m != 0 {
		t.Errorf("UPLOADS: got %d messages after a dry run, want 0", m)
	}
	if m := len(e.messages(events.DLQStreamName)); m != 1 {
		t.Errorf("UPLOADS_DLQ: got %d messages after a dry run, want 1", m)
	}
}

// A re-drive cut short between its publish and the delete, run again:
// JetStream drops the second publish, and the dead letter goes.
func TestRedriveAfterAnInterruptedRedrivePublishesOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.request("a", "a")
	seq := e.deadLetter(a, events.ReasonClaimMissing)
	first := &nats.Msg{Subject: a.Subject, Header: withoutNats(a.Header), Data: a.Data}
	first.Header.Set(events.HeaderMsgID, fmt.Sprintf("redrive/UPLOADS_DLQ/%d", seq))
	e.publish(first)

	var got []republish.Redriven
	n, err := republish.Redrive{}.Run(context.Background(), e.js, func(r republish.Redriven) { got = append(got, r) })
	if err != nil || n != 1 || !got[0].Duplicate {
		t.Fatalf("re-drive: got %d, %v, %+v; want one duplicate", n, err, got)
	}
	if m := len(e.messages(events.StreamName)); m != 1 {
		t.Errorf("UPLOADS: got %d messages, want the one published before", m)
	}
	if m := len(e.messages(events.DLQStreamName)); m != 0 {
		t.Errorf("UPLOADS_DLQ: got %d messages, want 0", m)
	}
}

func TestRedriveKeepsTheDeadLetterWhenThePublishFails(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.deadLetter(e.request("a", "a"), events.ReasonClaimMissing)
	if err := e.js.DeleteStream(context.Background(), events.StreamName); err != nil {
		t.Fatal(err)
	}
	n, err := republish.Redrive{}.Run(context.Background(), e.js, nil)
	if err == nil || n != 0 || !strings.Contains(err.Error(), "the dead letter stays") {
		t.Fatalf("re-drive without UPLOADS: got %d, %v; want an error", n, err)
	}
	if m := len(e.messages(events.DLQStreamName)); m != 1 {
		t.Errorf("UPLOADS_DLQ: got %d messages, want the dead letter kept", m)
	}
}

// A re-drive of one sequence re-drives that letter only; a sequence that
// holds none, or one the filter's reason does not pick, re-drives nothing.
func TestRedriveOfOneSequence(t *testing.T) {
	t.Parallel()
	e := setup(t)
	aSeq := e.deadLetter(e.request("a", "a"), events.ReasonClaimMissing)
	bSeq := e.deadLetter(e.request("b", "b"), events.ReasonClaimMissing)

	for _, f := range []uploadview.DeadLetterFilter{
		{Seq: bSeq + 10},
		{Seq: bSeq, Reason: events.ReasonConflict},
		{Seq: bSeq, Subject: "uploads.requested.a"},
	} {
		if n, err := (republish.Redrive{DeadLetterFilter: f}).Run(context.Background(), e.js, nil); n != 0 || err != nil {
			t.Errorf("%+v: got %d, %v, want 0, nil", f, n, err)
		}
	}
	var got []republish.Redriven
	n, err := republish.Redrive{DeadLetterFilter: uploadview.DeadLetterFilter{Seq: bSeq}}.Run(
		context.Background(), e.js, func(r republish.Redriven) { got = append(got, r) })
	if err != nil || n != 1 || len(got) != 1 || got[0].Seq != bSeq || got[0].Subject != "uploads.requested.b" || got[0].NewSeq == 0 {
		t.Fatalf("re-drive of #%d: got %d, %v, %+v", bSeq, n, err, got)
	}
	var left []uint64
	for _, raw := range e.messages(events.DLQStreamName) {
		left = append(left, raw.Sequence)
	}
	if !slices.Equal(left, []uint64{aSeq}) {
		t.Errorf("UPLOADS_DLQ holds %v, want [%d]", left, aSeq)
	}
}

// More events than one pull asks for: every one is replayed, in order.
func TestReplayManyEvents(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const n = 700
	ctx := context.Background()
	for i := range n {
		msg := &nats.Msg{Subject: fmt.Sprintf("uploads.requested.u%03d", i), Data: []byte("x")}
		if _, err := e.js.PublishMsgAsync(msg); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishes not acked")
	}
	var last uint64
	inOrder := true
	got, err := republish.Replay{Selection: republish.Selection{Subject: "uploads.requested.>"}}.Run(ctx, e.js, func(r republish.Replayed) {
		inOrder = inOrder && r.Seq == last+1
		last = r.Seq
	})
	if err != nil || got != n || !inOrder {
		t.Fatalf("replay: got %d (in order: %v), %v; want %d in order", got, inOrder, err, n)
	}
	if m := len(e.messages(events.StreamName)); m != 2*n {
		t.Errorf("UPLOADS: got %d messages, want %d", m, 2*n)
	}
}
