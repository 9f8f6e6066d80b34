// Package streamscan reads the messages of a JetStream stream that a
// selection picks (subjects, a time range, or the latest of each subject),
// oldest first, without acknowledging or changing anything: blobrefctl's
// replays and re-drives, and package uploadview, read the pipeline's streams
// with it.
//
// A scan stops at the last message the stream held when it began, so a scan
// that publishes into the stream it reads never reads its own messages.
package streamscan

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
	// opTimeout bounds the deletion of a scan's consumer.
	opTimeout = 10 * time.Second
)

// Stop, returned by a Visit, ends the scan early without an error.
var Stop = errors.New("streamscan: stop")

// Selection picks messages of a stream.
type Selection struct {
	// Subject is the subject filter, wildcards allowed, e.g.
	// "uploads.requested.>".
	Subject string
	// Subjects are several subject filters, in place of Subject.
	Subjects []string
	// Since selects the messages stored at or after it; zero means from the
	// first message.
	Since time.Time
	// Until selects the messages stored before it; zero means up to the last
	// message the stream held when the scan began.
	Until time.Time
	// Last selects only the latest message of each subject that Subject
	// matches. It excludes Since.
	Last bool
	// HeadersOnly reads the messages' headers without their bodies (a
	// header Nats-Msg-Size then holds each body's size).
	HeadersOnly bool
}

// Validate says what is wrong with s, if anything.
func (s Selection) Validate() error {
	switch {
	case s.Subject == "" && len(s.Subjects) == 0:
		return errors.New("streamscan: no subject")
	case s.Subject != "" && len(s.Subjects) > 0:
		return errors.New("streamscan: Subject and Subjects exclude each other")
	case s.Last && !s.Since.IsZero():
		return errors.New("streamscan: the latest message of each subject (Last) and Since exclude each other")
	case !s.Since.IsZero() && !s.Until.IsZero() && !s.Since.Before(s.Until):
		return fmt.Errorf("streamscan: Since %s is not before Until %s", s.Since.Format(time.RFC3339Nano), s.Until.Format(time.RFC3339Nano))
	}
	return nil
}

func (s Selection) filter() string {
	if s.Subject != "" {
		return s.Subject
	}
	return fmt.Sprint(s.Subjects)
}

// Visit is called for each selected message, oldest first. Returning Stop
// ends the scan; another error ends it with that error.
type Visit func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error

// Scan calls fn for each message of stream that sel selects, oldest first,
// up to the last message the stream held when Scan began. It reads them
// through an ephemeral pull consumer without acks, which it deletes when it
// returns.
func Scan(ctx context.Context, js jetstream.JetStream, stream string, sel Selection, fn Visit) error {
	if err := sel.Validate(); err != nil {
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
		Description:       "blobref scan",
		FilterSubject:     sel.Subject,
		FilterSubjects:    sel.Subjects,
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		HeadersOnly:       sel.HeadersOnly,
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
		return fmt.Errorf("stream %s: read %s: %w", stream, sel.filter(), err)
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
			return fmt.Errorf("stream %s: read %s: %w", stream, sel.filter(), err)
		}
		done, got := false, 0
		var ferr error
		// Drain the whole batch even after the end or an error, so that no
		// fetch outlives Scan.
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
		if errors.Is(ferr, Stop) {
			return nil
		}
		if ferr != nil {
			return ferr
		}
		if done {
			return nil
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoHeartbeat) {
			return fmt.Errorf("stream %s: read %s: %w", stream, sel.filter(), err)
		}
		if got == 0 {
			// Nothing came: the rest may have been deleted or aged out.
			ci, err := cons.Info(ctx)
			if err != nil {
				return fmt.Errorf("stream %s: read %s: %w", stream, sel.filter(), err)
			}
			pending = ci.NumPending
		}
	}
	return nil
}
