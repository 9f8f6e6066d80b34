// Package republish publishes stored pipeline events again: a replay of
// events of the UPLOADS stream (those since a point in time, or the latest of
// each subject) and a re-drive of the dead letters in UPLOADS_DLQ to the
// subjects they came from.
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
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// fetchBatch is how many messages one pull asks for.
	fetchBatch = 256
	// fetchWait is how long one pull waits for messages.
	fetchWait = 2 * time.Second
	// inactiveThreshold is how long the server keeps a scan's consumer after
	// the scan stops pulling (it deletes the consumer itself when done).
	inactiveThreshold = time.Minute
	// opTimeout bounds one request to JetStream: a publish, a delete.
	opTimeout = 10 * time.Second
)

// Selection picks messages of a stream.
type Selection struct {
	// Subject is the subject filter, wildcards allowed, e.g.
	// "uploads.requested.>".
	Subject string
	// Since selects the messages stored at or after it; zero means from the
	// first message.
	Since time.Time
	// Until selects the messages stored before it; zero means up to the last
	// message the stream held when the scan began.
	Until time.Time
	// Last selects only the latest message of each subject that Subject
	// matches. It excludes Since.
	Last bool
}

func (s Selection) validate() error {
	switch {
	case s.Subject == "":
		return errors.New("republish: no subject")
	case s.Last && !s.Since.IsZero():
		return errors.New("republish: the latest message of each subject (Last) and Since exclude each other")
	case !s.Since.IsZero() && !s.Until.IsZero() && !s.Since.Before(s.Until):
		return fmt.Errorf("republish: Since %s is not before Until %s", s.Since.Format(time.RFC3339Nano), s.Until.Format(time.RFC3339Nano))
	}
	return nil
}

// visit is called for each selected message, oldest first.
type visit func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error

// scan calls fn for each message of stream that sel selects, oldest first,
// up to the last message the stream held when scan began. It reads them
// through an ephemeral pull consumer without acks, which it deletes when it
// returns.
func scan(ctx context.Context, js jetstream.JetStream, stream string, sel Selection, fn visit) error {
	if err := sel.validate(); err != nil {
		return err
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	upTo := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil
	}

	cfg := jetstream.ConsumerConfig{
		Description:       "blobrefctl scan",
		FilterSubject:     sel.Subject,
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: inactiveThreshold,
		MemoryStorage:     true,
		Replicas:          1,
	}
	switch {
	case sel.Last:
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
	case !sel.Since.IsZero():
		since := sel.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := s.CreateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("stream %s: read %s: %w", stream, sel.Subject, err)
	}
	name := cons.CachedInfo().Name
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		defer cancel()
		_ = s.DeleteConsumer(dctx, name) // else the server removes it after inactiveThreshold
	}()
	// pending is how many selected messages the consumer has yet to
	// deliver: a pull asks for no more, so it returns as soon as they came.
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.Fetch(int(min(pending, fetchBatch)), jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			return fmt.Errorf("stream %s: read %s: %w", stream, sel.Subject, err)
		}
		done, got := false, 0
		var ferr error
		// Drain the whole batch even after the end or an error, so that no
		// fetch outlives scan.
		for msg := range batch.Messages() {
			got++
			if done || ferr != nil {
				continue
			}
			meta, err := msg.Metadata()
			if err != nil {
				ferr = fmt.Errorf("stream %s: %w", stream, err)
				continue
			}
			if meta.Sequence.Stream > upTo || !sel.Until.IsZero() && !meta.Timestamp.Before(sel.Until) {
				done = true
				continue
			}
			if err := fn(msg, meta); err != nil {
				ferr = err
				continue
			}
			pending = meta.NumPending
			done = meta.Sequence.Stream == upTo
		}
		if ferr != nil {
			return ferr
		}
		if done {
			return nil
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoHeartbeat) {
			return fmt.Errorf("stream %s: read %s: %w", stream, sel.Subject, err)
		}
		if got == 0 {
			// Nothing came: the rest may have been deleted or aged out.
			ci, err := cons.Info(ctx)
			if err != nil {
				return fmt.Errorf("stream %s: read %s: %w", stream, sel.Subject, err)
			}
			pending = ci.NumPending
		}
	}
	return nil
}
