package uploadview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/streamscan"
	"github.com/blobref/blobref/pkg/events"
)

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

// ReadLetter reads the message at seq of UPLOADS_DLQ, stored at stored, on
// subject with header.
func ReadLetter(subject string, header nats.Header, seq uint64, stored time.Time) Letter {
	l := Letter{Seq: seq, Stored: stored.UTC()}
	l.DeadLetter, l.Err = events.ParseDeadLetter(header)
	orig, ok := strings.CutPrefix(subject, "dlq.")
	switch {
	case l.Err != nil:
	case !ok:
		l.Err = fmt.Errorf("subject %s is not dlq.<original subject>", subject)
	case l.Subject == "":
		l.Subject = orig
	case l.Subject != orig:
		l.Err = fmt.Errorf("%s %q does not match the subject %s", events.HeaderDeadSubject, l.Subject, subject)
	}
	if l.Subject == "" {
		l.Subject = orig
	}
	return l
}

// At is when the letter was dead-lettered: its Blobref-Dead-Time, or when
// the stream stored it.
func (l Letter) At() time.Time {
	if l.Time.IsZero() {
		return l.Stored
	}
	return l.Time
}

// UploadID is the id of the upload whose event was dead-lettered: the last
// token of its original subject when that is an upload event's subject.
func (l Letter) UploadID() string {
	return uploadID(l.Subject)
}

// uploadID returns the upload id of a pipeline event's subject, or "".
func uploadID(subject string) string {
	for _, prefix := range []string{events.RequestedSubject(""), events.BlobStoredSubject(""), events.CompletedSubject("")} {
		if id, ok := strings.CutPrefix(subject, prefix); ok && events.ValidID(id) {
			return id
		}
	}
	return ""
}

// letterJSON is a Letter as the console shows it.
type letterJSON struct {
	Seq        uint64    `json:"seq"`
	At         time.Time `json:"at"`
	Stored     time.Time `json:"stored"`
	UploadID   string    `json:"uploadId,omitempty"`
	Subject    string    `json:"subject"`
	Reason     string    `json:"reason,omitempty"`
	Step       string    `json:"step,omitempty"`
	Error      string    `json:"error,omitempty"`
	Deliveries uint64    `json:"deliveries,omitempty"`
	Stream     string    `json:"stream,omitempty"`
	Sequence   uint64    `json:"sequence,omitempty"`
	Unreadable string    `json:"unreadable,omitempty"`
}

// MarshalJSON encodes the letter with lower-case names; an unreadable
// letter says why in "unreadable".
func (l Letter) MarshalJSON() ([]byte, error) {
	j := letterJSON{
		Seq: l.Seq, At: l.At(), Stored: l.Stored, UploadID: l.UploadID(), Subject: l.Subject,
		Reason: l.Reason, Step: l.Step, Error: l.Error, Deliveries: l.Deliveries,
		Stream: l.Stream, Sequence: l.Sequence,
	}
	if l.Err != nil {
		j.Unreadable = l.Err.Error()
	}
	return json.Marshal(j)
}

// DeadLetterFilter picks dead letters in UPLOADS_DLQ.
type DeadLetterFilter struct {
	// Subject filters the original subjects, e.g. "uploads.requested.>" or
	// "uploads.requested.<id>"; empty means all. The dead-letter subject
	// "dlq.<subject>" is accepted too.
	Subject string
	// Reason is the dead-letter reason (events.Reason*); empty means any.
	Reason string
	// Seq, when not 0, picks the letter at that sequence of UPLOADS_DLQ
	// only (if Subject and Reason pick it too).
	Seq uint64
}

// Selection is the part of the stream that holds the letters f picks,
// for streamscan (Seq aside).
func (f DeadLetterFilter) Selection() streamscan.Selection {
	switch {
	case f.Subject == "":
		return streamscan.Selection{Subject: events.DLQSubjects}
	case strings.HasPrefix(f.Subject, "dlq."):
		return streamscan.Selection{Subject: f.Subject}
	}
	return streamscan.Selection{Subject: events.DeadLetterSubject(f.Subject)}
}

// Picks reports whether f picks l, a letter stored on dlqSubject. Letters
// whose headers cannot be read are picked unless f names a reason.
func (f DeadLetterFilter) Picks(l Letter, dlqSubject string) bool {
	switch {
	case f.Seq != 0 && l.Seq != f.Seq:
		return false
	case f.Reason != "" && (l.Err != nil || l.Reason != f.Reason):
		return false
	}
	return subjectMatches(f.Selection().Subject, dlqSubject)
}

// subjectMatches reports whether the NATS subject filter (wildcards * and
// >) matches subject.
func subjectMatches(filter, subject string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, f := range ft {
		switch {
		case f == ">":
			return len(st) > i
		case i >= len(st):
			return false
		case f != "*" && f != st[i]:
			return false
		}
	}
	return len(ft) == len(st)
}

// DeadLetters calls fn for each dead letter that f picks, oldest first,
// until fn returns an error (streamscan.Stop ends it without one). It reads
// their headers only.
func DeadLetters(ctx context.Context, js jetstream.JetStream, f DeadLetterFilter, fn func(Letter) error) error {
	if f.Seq != 0 {
		raw, err := GetDeadLetter(ctx, js, f.Seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		l := ReadLetter(raw.Subject, raw.Header, raw.Sequence, raw.Time)
		if !f.Picks(l, raw.Subject) {
			return nil
		}
		if err := fn(l); !errors.Is(err, streamscan.Stop) {
			return err
		}
		return nil
	}
	sel := f.Selection()
	sel.HeadersOnly = true
	return streamscan.Scan(ctx, js, events.DLQStreamName, sel, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
		l := ReadLetter(msg.Subject(), msg.Headers(), meta.Sequence.Stream, meta.Timestamp)
		if !f.Picks(l, msg.Subject()) {
			return nil
		}
		return fn(l)
	})
}

// GetDeadLetter returns the message at seq of UPLOADS_DLQ, headers and body;
// jetstream.ErrMsgNotFound when there is none.
func GetDeadLetter(ctx context.Context, js jetstream.JetStream, seq uint64) (*jetstream.RawStreamMsg, error) {
	s, err := js.Stream(ctx, events.DLQStreamName)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", events.DLQStreamName, err)
	}
	raw, err := s.GetMsg(ctx, seq)
	if err != nil {
		return nil, fmt.Errorf("stream %s: message %d: %w", events.DLQStreamName, seq, err)
	}
	return raw, nil
}
