package streamscan_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/streamscan"
	"github.com/blobref/blobref/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A scan reads the selected subjects oldest first, headers only when asked
// (the body's size then in Nats-Msg-Size), stops early on Stop, and leaves
// no consumer behind.
func TestScan(t *testing.T) {
	t.Parallel()
	_, js := testenv.StartNATS(t).Connect()
	ctx := context.Background()
	for i, subject := range []string{"uploads.requested.a", "uploads.completed.a", "uploads.requested.b", "uploads.blob.stored.a", "uploads.requested.a"} {
		msg := &nats.Msg{Subject: subject, Header: nats.Header{"Nats-Msg-Id": {subject + string(rune('0'+i))}}, Data: []byte("body-" + subject)}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	type seen struct {
		seq  uint64
		data string
		size string
	}
	scan := func(sel streamscan.Selection, stopAfter int) ([]seen, error) {
		var out []seen
		err := streamscan.Scan(ctx, js, "UPLOADS", sel, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
			out = append(out, seen{meta.Sequence.Stream, string(msg.Data()), msg.Headers().Get("Nats-Msg-Size")})
			if len(out) == stopAfter {
				return streamscan.Stop
			}
			return nil
		})
		return out, err
	}
	seqs := func(ss []seen) []uint64 {
		var out []uint64
		for _, s := range ss {
			out = append(out, s.seq)
		}
		return out
	}

	got, err := scan(streamscan.Selection{Subjects: []string{"uploads.requested.a", "uploads.blob.stored.a"}}, 0)
	if err != nil || !slices.Equal(seqs(got), []uint64{1, 4, 5}) || got[0].data != "body-uploads.requested.a" {
		t.Errorf("two subjects: got %+v, %v; want #1, #4, #5 with their bodies", got, err)
	}
	got, err = scan(streamscan.Selection{Subject: "uploads.>", HeadersOnly: true}, 0)
	if err != nil || len(got) != 5 || got[1].data != "" || got[1].size != "24" {
		t.Errorf("headers only: got %+v, %v; want 5 without bodies, with their sizes", got, err)
	}
	got, err = scan(streamscan.Selection{Subject: "uploads.>"}, 2)
	if err != nil || !slices.Equal(seqs(got), []uint64{1, 2}) {
		t.Errorf("stopped after two: got %+v, %v", got, err)
	}
	got, err = scan(streamscan.Selection{Subject: "uploads.requested.a", Last: true}, 0)
	if err != nil || !slices.Equal(seqs(got), []uint64{5}) {
		t.Errorf("last: got %+v, %v; want #5", got, err)
	}
	for _, bad := range []streamscan.Selection{{}, {Subject: "a", Subjects: []string{"b"}}} {
		if _, err := scan(bad, 0); err == nil {
			t.Errorf("%+v: got no error", bad)
		}
	}
	boom := errors.New("boom")
	if err := streamscan.Scan(ctx, js, "UPLOADS", streamscan.Selection{Subject: "uploads.>"}, func(jetstream.Msg, *jetstream.MsgMetadata) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("a visit's error: got %v, want it returned", err)
	}
	s, err := js.Stream(ctx, "UPLOADS")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Consumers != 0 {
		t.Errorf("consumers left: %v, %v; want none", info.State.Consumers, err)
	}
}
