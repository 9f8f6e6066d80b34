// Package republish publishes stored pipeline events again: a replay of
// events of the UPLOADS stream (those since a point in time, or the latest of
// each subject) and a re-drive of the dead letters in UPLOADS_DLQ to the
// subjects they came from. It reads the streams with package streamscan and
// the dead letters with package uploadview.
//
// A republished message is a new message: its original subject, headers and
// body, but a fresh Nats-Msg-Id, so JetStream does not drop it as a duplicate
// and the steps derive new ids for what they emit. The steps' markers make
// it run only the side effects that have not finished; the finished ones are
// skipped and their recorded results emitted again.
//
// A scan stops at the last message the stream held when it began, so a
// replay never replays its own republished messages.
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

	"github.com/blobref/blobref/internal/streamscan"
	"github.com/blobref/blobref/internal/uploadview"
	"github.com/blobref/blobref/pkg/events"
)

// opTimeout bounds one request to JetStream: a publish, a delete.
const opTimeout = 10 * time.Second

// Selection picks messages of a stream (see streamscan).
type Selection = streamscan.Selection

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
	if r.Subject == "" {
		return 0, errors.New("republish: no subject") // Subjects are for readers
	}
	err := streamscan.Scan(ctx, js, events.StreamName, r.Selection, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
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

// Redrive publishes dead letters again to the subjects they came from.
type Redrive struct {
	uploadview.DeadLetterFilter
	// DryRun reports what would be re-driven; it publishes and deletes
	// nothing.
	DryRun bool
}

// Redriven reports a dead letter that a Redrive re-drove, or would have.
type Redriven struct {
	uploadview.Letter
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
	redrive := func(subject string, header nats.Header, body []byte, seq uint64, stored time.Time) error {
		l := uploadview.ReadLetter(subject, header, seq, stored)
		if !r.Picks(l, subject) {
			return nil
		}
		rep, err := r.redrive(ctx, js, dlq, l, header, body)
		if err != nil {
			return err
		}
		if rep.Skipped == nil {
			n++
		}
		if report != nil {
			report(rep)
		}
		return nil
	}
	if r.Seq != 0 {
		raw, err := dlq.GetMsg(ctx, r.Seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("stream %s: message %d: %w", events.DLQStreamName, r.Seq, err)
		}
		err = redrive(raw.Subject, raw.Header, raw.Data, raw.Sequence, raw.Time)
		return n, err
	}
	err = streamscan.Scan(ctx, js, events.DLQStreamName, r.Selection(), func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
		return redrive(msg.Subject(), msg.Headers(), msg.Data(), meta.Sequence.Stream, meta.Timestamp)
	})
	return n, err
}

// redrive re-drives one dead letter l, whose message has header and body.
func (r Redrive) redrive(ctx context.Context, js jetstream.JetStream, dlq jetstream.Stream, l uploadview.Letter, header nats.Header, body []byte) (Redriven, error) {
	rep := Redriven{Letter: l, MsgID: events.DerivedMsgID("redrive", events.DLQStreamName, l.Seq)}
	if l.Err != nil {
		rep.Skipped = l.Err
		return rep, nil
	}
	if r.DryRun {
		return rep, nil
	}
	ack, err := publish(ctx, js, l.Subject, header, body, rep.MsgID)
	if err != nil {
		return rep, fmt.Errorf("re-drive %s #%d to %s: %w (the dead letter stays)", events.DLQStreamName, l.Seq, l.Subject, err)
	}
	rep.Duplicate = ack.Duplicate
	if !ack.Duplicate {
		rep.NewSeq = ack.Sequence
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	err = dlq.DeleteMsg(dctx, l.Seq)
	cancel()
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return rep, fmt.Errorf("re-drove %s #%d to %s as %s, but could not delete it: %w (run again to delete it; the publish is de-duplicated within the window)",
			events.DLQStreamName, l.Seq, l.Subject, rep.MsgID, err)
	}
	return rep, nil
}
