package testenv

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
)

// pollInterval is how often the Await functions that poll look again.
const pollInterval = 20 * time.Millisecond

// DeadLetters returns every dead letter in the dead-letter stream
// (events.DLQStreamName) by the subject of its original message.
func DeadLetters(t testing.TB, js jetstream.JetStream) map[string]events.DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	s, err := js.Stream(ctx, events.DLQStreamName)
	if err != nil {
		t.Fatalf("stream %s: %v", events.DLQStreamName, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s: %v", events.DLQStreamName, err)
	}
	out := map[string]events.DeadLetter{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("dead letter %d: %v", seq, err)
		}
		d, err := events.ParseDeadLetter(raw.Header)
		if err != nil {
			t.Fatalf("dead letter %d: %v", seq, err)
		}
		out[d.Subject] = d
	}
	return out
}

// AwaitDeadLetters polls the dead-letter stream until it holds dead letters
// of at least n original subjects, or within has passed, and returns them
// as DeadLetters does. Any number but n fails the test.
func AwaitDeadLetters(t testing.TB, js jetstream.JetStream, n int, within time.Duration) map[string]events.DeadLetter {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		d := DeadLetters(t, js)
		if len(d) >= n || time.Now().After(deadline) {
			if len(d) != n {
				t.Fatalf("dead letters: got %d (%v), want %d", len(d), d, n)
			}
			return d
		}
		time.Sleep(pollInterval)
	}
}

// AwaitDeadLetter polls the dead-letter stream for up to within until it
// holds a dead letter of the message published on subject, and returns the
// latest one with the original body it carries.
func AwaitDeadLetter(t testing.TB, js jetstream.JetStream, subject string, within time.Duration) (events.DeadLetter, []byte) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, events.DLQStreamName)
	if err != nil {
		t.Fatalf("stream %s: %v", events.DLQStreamName, err)
	}
	deadline := time.Now().Add(within)
	for {
		raw, err := s.GetLastMsgForSubject(ctx, events.DeadLetterSubject(subject))
		if err == nil {
			d, err := events.ParseDeadLetter(raw.Header)
			if err != nil {
				t.Fatalf("dead letter of %s: %v", subject, err)
			}
			return d, raw.Data
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatalf("dead letter of %s: %v", subject, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("got no dead letter of %s within %v, want one", subject, within)
		}
		time.Sleep(pollInterval)
	}
}
