package republish

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
)

// Replay publishes events of the UPLOADS stream again.
type Replay struct {
	Selection
	// DryRun reports what would be published and publishes nothing.
	DryRun bool
	// RunID tells this replay's Nats-Msg-Ids from other replays'; empty
	// means a random one.
	RunID string
}

// Replayed reports an event that a Replay published again, or would have.
type Replayed struct {
	// Subject is the event's subject, where it is published again.
	Subject string
	// Seq is its sequence in UPLOADS, and Stored when UPLOADS stored it.
	Seq    uint64
	Stored time.Time
	// MsgID is the Nats-Msg-Id it is published with.
	MsgID string
	// NewSeq is the sequence of the new message; 0 in a dry run, or when
	// JetStream found it a duplicate (Duplicate).
	NewSeq    uint64
	Duplicate bool
}

// Run publishes each selected event again, oldest first, with its subject,
// headers (but those starting with Nats-) and body, and the Nats-Msg-Id
// "replay-<run>/UPLOADS/<seq>". It waits for JetStream's ack of each before
// the next, calls report for each (unless nil) and returns how many events it
// replayed. It stops at the first failure.
func (r Replay) Run(ctx context.Context, js jetstream.JetStream, report func(Replayed)) (int, error) {
	run := r.RunID
	if run == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		run = hex.EncodeToString(b[:])
	}
	n := 0
	err := scan(ctx, js, events.StreamName, r.Selection, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
		rep := Replayed{
			Subject: msg.Subject(), Seq: meta.Sequence.Stream, Stored: meta.Timestamp,
			MsgID: events.DerivedMsgID("replay-"+run, meta.Stream, meta.Sequence.Stream),
		}
		if !r.DryRun {
			ack, err := publish(ctx, js, msg.Subject(), msg.Headers(), msg.Data(), rep.MsgID)
			if err != nil {
				return fmt.Errorf("replay %s (%s #%d): %w", msg.Subject(), meta.Stream, meta.Sequence.Stream, err)
			}
			rep.Duplicate = ack.Duplicate
			if !ack.Duplicate {
				rep.NewSeq = ack.Sequence
			}
		}
		n++
		if report != nil {
			report(rep)
		}
		return nil
	})
	return n, err
}

// publish publishes body with header (less the headers that start with
// Nats- or Blobref-Dead-) and Nats-Msg-Id msgID to subject, and waits for the
// UPLOADS stream to ack it.
func publish(ctx context.Context, js jetstream.JetStream, subject string, header nats.Header, body []byte, msgID string) (*jetstream.PubAck, error) {
	h := make(nats.Header, len(header)+1)
	for k, vs := range header {
		if hasPrefixFold(k, "nats-") || hasPrefixFold(k, "blobref-dead-") {
			continue
		}
		h[k] = slices.Clone(vs)
	}
	h.Set(events.HeaderMsgID, msgID)
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ack, err := js.PublishMsg(pctx, &nats.Msg{Subject: subject, Header: h, Data: body}, jetstream.WithExpectStream(events.StreamName))
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	return ack, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// DeadLetterFilter picks dead letters in UPLOADS_DLQ.
type DeadLetterFilter struct {
	// Subject filters the original subjects, e.g. "uploads.requested.>" or
	// "uploads.requested.<id>"; empty means all. The dead-letter subject
	// "dlq.<subject>" is accepted too.
	Subject string
	// Reason is the dead-letter reason (events.Reason*); empty means any.
	Reason string
}

func (f DeadLetterFilter) selection() Selection {
	switch {
	case f.Subject == "":
		return Selection{Subject: events.DLQSubjects}
	case strings.HasPrefix(f.Subject, "dlq."):
		return Selection{Subject: f.Subject}
	}
	return Selection{Subject: events.DeadLetterSubject(f.Subject)}
}

// Letter is a dead letter in UPLOADS_DLQ.
type Letter struct {
	// Seq is its sequence in UPLOADS_DLQ, Stored when it was stored.
	Seq    uint64
	Stored time.Time
	// DeadLetter is what its Blobref-Dead-* headers say. Subject is the
	// original subject, from the dead letter's own subject when the header
	// is missing.
	events.DeadLetter
	// Err is why the headers could not be read; the letter is then not one
	// the pipeline wrote, and it is never re-driven.
	Err error
}

// letter reads a message of UPLOADS_DLQ.
func letter(msg jetstream.Msg, meta *jetstream.MsgMetadata) Letter {
	l := Letter{Seq: meta.Sequence.Stream, Stored: meta.Timestamp}
	l.DeadLetter, l.Err = events.ParseDeadLetter(msg.Headers())
	orig, ok := strings.CutPrefix(msg.Subject(), "dlq.")
	switch {
	case l.Err != nil:
	case !ok:
		l.Err = fmt.Errorf("subject %s is not dlq.<original subject>", msg.Subject())
	case l.Subject == "":
		l.Subject = orig
	case l.Subject != orig:
		l.Err = fmt.Errorf("%s %q does not match the subject %s", events.HeaderDeadSubject, l.Subject, msg.Subject())
	}
	if l.Subject == "" {
		l.Subject = orig
	}
	return l
}

// ListDeadLetters calls fn for each dead letter that f picks, oldest first.
// Letters whose headers cannot be read are listed too (with Err set) unless f
// names a reason.
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, f DeadLetterFilter, fn func(Letter) error) error {
	return deadLetters(ctx, js, f, func(l Letter, _ jetstream.Msg) error { return fn(l) })
}

func deadLetters(ctx context.Context, js jetstream.JetStream, f DeadLetterFilter, fn func(Letter, jetstream.Msg) error) error {
	return scan(ctx, js, events.DLQStreamName, f.selection(), func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
		l := letter(msg, meta)
		if f.Reason != "" && (l.Err != nil || l.Reason != f.Reason) {
			return nil
		}
		return fn(l, msg)
	})
}

// Redrive publishes dead letters again to the subjects they came from.
type Redrive struct {
	DeadLetterFilter
	// DryRun reports what would be re-driven; it publishes and deletes
	// nothing.
	DryRun bool
}

// Redriven reports a dead letter that a Redrive re-drove, or would have.
type Redriven struct {
	Letter
	// MsgID is the Nats-Msg-Id of the republished message.
	MsgID string
	// NewSeq is its sequence in UPLOADS; 0 in a dry run or when JetStream
	// found it a duplicate (Duplicate), as after a re-drive that was cut
	// short between its publish and the delete.
	NewSeq    uint64
	Duplicate bool
	// Skipped is why the letter was left alone (its headers do not read).
	Skipped error
}

// Run re-drives each dead letter that the filter picks, oldest first: it
// publishes the original message (its original subject, its headers but the
// Blobref-Dead-* and Nats-* ones, its body) with the Nats-Msg-Id
// "redrive/UPLOADS_DLQ/<seq>", and deletes the dead letter only once UPLOADS
// has acked that publish. A re-drive cut short before the delete and run
// again within the de-duplication window therefore publishes nothing twice.
// It calls report for each letter (unless nil), returns how many it re-drove
// and stops at the first failure.
func (r Redrive) Run(ctx context.Context, js jetstream.JetStream, report func(Redriven)) (int, error) {
	dlq, err := js.Stream(ctx, events.DLQStreamName)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", events.DLQStreamName, err)
	}
	n := 0
	err = deadLetters(ctx, js, r.DeadLetterFilter, func(l Letter, msg jetstream.Msg) error {
		rep := Redriven{Letter: l, MsgID: events.DerivedMsgID("redrive", events.DLQStreamName, l.Seq)}
		if l.Err != nil {
			rep.Skipped = l.Err
			if report != nil {
				report(rep)
			}
			return nil
		}
		if !r.DryRun {
			ack, err := publish(ctx, js, l.Subject, msg.Headers(), msg.Data(), rep.MsgID)
			if err != nil {
				return fmt.Errorf("re-drive %s #%d to %s: %w (the dead letter stays)", events.DLQStreamName, l.Seq, l.Subject, err)
			}
			rep.Duplicate = ack.Duplicate
			if !ack.Duplicate {
				rep.NewSeq = ack.Sequence
			}
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
			err = dlq.DeleteMsg(dctx, l.Seq)
			cancel()
			if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return fmt.Errorf("re-drove %s #%d to %s as %s, but could not delete it: %w (run again to delete it; the publish is de-duplicated within the window)",
					events.DLQStreamName, l.Seq, l.Subject, rep.MsgID, err)
			}
		}
		n++
		if report != nil {
			report(rep)
		}
		return nil
	})
	return n, err
}
