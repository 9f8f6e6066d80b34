package uploadview

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/streamscan"
	"github.com/blobref/blobref/pkg/events"
)

// maxMessages is the most messages Get reads of one upload in each stream
// (a replayed upload has a few; more would be a runaway replay).
const maxMessages = 200

// maxShownBody is the largest JSON body a Message carries.
const maxShownBody = 4 << 10

// Message is a message of an upload in UPLOADS or UPLOADS_DLQ.
type Message struct {
	Stream  string              `json:"stream"`
	Seq     uint64              `json:"seq"`
	Subject string              `json:"subject"`
	Stored  time.Time           `json:"stored"`
	Header  map[string][]string `json:"header"`
	// Size is the body's size in bytes.
	Size int `json:"size"`
	// Body is the body when it is JSON (blob_stored and completed events)
	// and at most 4 KiB.
	Body string `json:"body,omitempty"`
	// DeadLetter is what a message of UPLOADS_DLQ says.
	DeadLetter *Letter `json:"deadLetter,omitempty"`
}

// subjectsOf returns the subjects of upload id's events in UPLOADS.
func subjectsOf(id string) []string {
	return []string{events.RequestedSubject(id), events.BlobStoredSubject(id), events.CompletedSubject(id)}
}

// deadSubjectsOf returns the subjects of its dead letters in UPLOADS_DLQ
// (completed events are never consumed, so never dead-lettered).
func deadSubjectsOf(id string) []string {
	return []string{events.DeadLetterSubject(events.RequestedSubject(id)), events.DeadLetterSubject(events.BlobStoredSubject(id))}
}

// readMessages adds to f every message of the upload in UPLOADS and
// UPLOADS_DLQ (up to maxMessages in each), oldest first, with the latest
// request, the last time of each subject and the dead letters.
func (v *View) readMessages(ctx context.Context, f *facts) error {
	f.lastStored = map[string]time.Time{}
	n := 0
	err := streamscan.Scan(ctx, v.JS, events.StreamName, streamscan.Selection{Subjects: subjectsOf(f.id)},
		func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
			m := newMessage(events.StreamName, msg.Subject(), msg.Headers(), msg.Data(), meta.Sequence.Stream, meta.Timestamp)
			f.messages = append(f.messages, m)
			f.lastStored[m.Subject] = m.Stored
			if m.Subject == events.RequestedSubject(f.id) {
				if ev, err := events.Decode(m.Subject, msg.Headers(), msg.Data()); err == nil {
					f.request = ev
				}
			}
			if n++; n == maxMessages {
				return streamscan.Stop
			}
			return nil
		})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	n = 0
	err = streamscan.Scan(ctx, v.JS, events.DLQStreamName, streamscan.Selection{Subjects: deadSubjectsOf(f.id), HeadersOnly: true},
		func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
			m := newMessage(events.DLQStreamName, msg.Subject(), msg.Headers(), nil, meta.Sequence.Stream, meta.Timestamp)
			l := ReadLetter(msg.Subject(), msg.Headers(), meta.Sequence.Stream, meta.Timestamp)
			m.DeadLetter = &l
			f.messages = append(f.messages, m)
			f.letters = append(f.letters, l)
			if n++; n == maxMessages {
				return streamscan.Stop
			}
			return nil
		})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	sortLetters(f.letters)
	return nil
}

// streams are the pipeline's two streams, looked up once for many reads.
type streams struct {
	uploads, dlq jetstream.Stream // nil when missing
}

func (v *View) streams(ctx context.Context) (streams, error) {
	var s streams
	var err error
	if s.uploads, err = v.JS.Stream(ctx, events.StreamName); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return s, fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	if s.dlq, err = v.JS.Stream(ctx, events.DLQStreamName); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return s, fmt.Errorf("stream %s: %w", events.DLQStreamName, err)
	}
	return s, nil
}

// readLatest adds to f what the latest message of each of the upload's
// subjects says: when it was stored, the latest request, and the latest
// dead letter of each subject.
func (s streams) readLatest(ctx context.Context, f *facts) error {
	f.lastStored = map[string]time.Time{}
	last := func(st jetstream.Stream, subject string) (*jetstream.RawStreamMsg, error) {
		if st == nil {
			return nil, nil
		}
		raw, err := st.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("last message of %s: %w", subject, err)
		}
		return raw, nil
	}
	for _, subject := range subjectsOf(f.id)[:2] { // the completed event changes no state
		raw, err := last(s.uploads, subject)
		if err != nil {
			return err
		}
		if raw == nil {
			continue
		}
		f.lastStored[subject] = raw.Time.UTC()
		if subject == events.RequestedSubject(f.id) {
			if ev, err := events.Decode(subject, raw.Header, raw.Data); err == nil {
				f.request = ev
			}
		}
	}
	for _, subject := range deadSubjectsOf(f.id) {
		raw, err := last(s.dlq, subject)
		if err != nil {
			return err
		}
		if raw != nil {
			f.letters = append(f.letters, ReadLetter(raw.Subject, raw.Header, raw.Sequence, raw.Time))
		}
	}
	sortLetters(f.letters)
	return nil
}

func newMessage(stream, subject string, header nats.Header, data []byte, seq uint64, stored time.Time) Message {
	m := Message{Stream: stream, Seq: seq, Subject: subject, Stored: stored.UTC(), Header: map[string][]string(header), Size: len(data)}
	if m.Header == nil {
		m.Header = map[string][]string{}
	}
	if n := firstHeader(header, "Nats-Msg-Size"); n != "" { // a headers-only read
		if size, err := strconv.Atoi(n); err == nil {
			m.Size = size
		}
	}
	if len(data) <= maxShownBody && isJSON(firstHeader(header, "ce-datacontenttype")) {
		m.Body = string(data)
	}
	return m
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// firstHeader returns the first value of header name, matched without
// regard to case.
func firstHeader(h map[string][]string, name string) string {
	if vs := h[name]; len(vs) > 0 {
		return vs[0]
	}
	for k, vs := range h {
		if strings.EqualFold(k, name) && len(vs) > 0 {
			return vs[0]
		}
	}
	return ""
}
