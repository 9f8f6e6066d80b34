package events

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
)

// maxDeadErrorLen is the most bytes of error text a dead letter carries.
const maxDeadErrorLen = 1024

// DeadLetter describes why an event was dead-lettered. It travels in the Blobref-Dead-*
// headers of the message in [DLQStreamName].
type DeadLetter struct {
	// Reason is one of the Reason constants.
	Reason string
	// Step names the step that gave up, e.g. [StepBlob].
	Step string
	// Error is the error text; DeadLetterMsg truncates it to 1 KiB and makes it header-safe.
	Error string
	// Subject is the subject the original message was published on.
	Subject string
	// Stream is the stream the original message was stored in.
	Stream string
	// Deliveries is how many times the original message was delivered.
	Deliveries uint64
	// Sequence is the original message's stream sequence.
	Sequence uint64
	// Time is when the message was dead-lettered; zero means now.
	Time time.Time
}

// DeadLetterMsg builds the message published to [DLQStreamName] for the message with
// origHeader and origBody described by d: subject [DeadLetterSubject](d.Subject), a copy of the
// original headers (origHeader is not mutated) plus the Blobref-Dead-* headers, the original
// body verbatim (not copied; a claim-checked event keeps its ce-dataref header, so the
// reference travels) and Nats-Msg-Id msgID (omitted when "").
//
// Headers of the original that start with "Nats-" are dropped: they are JetStream publish
// directives (Nats-Msg-Id, Nats-Expected-*, Nats-Rollup, Nats-TTL, ...) that would act on the
// dead-letter stream instead. Header values are made header-safe (control characters become
// spaces) and the error text is truncated to 1 KiB.
func DeadLetterMsg(d DeadLetter, origHeader nats.Header, origBody []byte, msgID string) *nats.Msg {
	h := make(nats.Header, len(origHeader)+9)
	for k, vs := range origHeader {
		if hasPrefixFold(k, "nats-") || hasPrefixFold(k, "blobref-dead-") {
			continue
		}
		h[k] = slices.Clone(vs)
	}
	t := d.Time
	if t.IsZero() {
		t = time.Now()
	}
	h.Set(HeaderDeadReason, headerSafe(d.Reason, maxDeadErrorLen))
	h.Set(HeaderDeadStep, headerSafe(d.Step, maxDeadErrorLen))
	h.Set(HeaderDeadSubject, headerSafe(d.Subject, maxDeadErrorLen))
	h.Set(HeaderDeadStream, headerSafe(d.Stream, maxDeadErrorLen))
	h.Set(HeaderDeadDeliveries, strconv.FormatUint(d.Deliveries, 10))
	h.Set(HeaderDeadSequence, strconv.FormatUint(d.Sequence, 10))
	h.Set(HeaderDeadTime, t.UTC().Format(time.RFC3339Nano))
	if d.Error != "" {
		h.Set(HeaderDeadError, headerSafe(d.Error, maxDeadErrorLen))
	}
	if msgID != "" {
		h.Set(HeaderMsgID, headerSafe(msgID, maxDeadErrorLen))
	}
	return &nats.Msg{Subject: DeadLetterSubject(d.Subject), Header: h, Data: origBody}
}

// ParseDeadLetter reads the Blobref-Dead-* headers of a dead-letter message (names matched
// case-insensitively). A missing Blobref-Dead-Reason is an error; other missing headers leave
// their field zero.
func ParseDeadLetter(header nats.Header) (DeadLetter, error) {
	get := func(name string) (string, error) {
		v, _, err := headerValue(header, name)
		if err != nil {
			return "", fmt.Errorf("events: dead letter: %s: given more than once", name)
		}
		return trimOWS(v), nil
	}
	var d DeadLetter
	var err error
	if d.Reason, err = get(HeaderDeadReason); err != nil {
		return DeadLetter{}, err
	}
	if d.Reason == "" {
		return DeadLetter{}, errors.New("events: dead letter: missing " + HeaderDeadReason + " header")
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{HeaderDeadStep, &d.Step},
		{HeaderDeadError, &d.Error},
		{HeaderDeadSubject, &d.Subject},
		{HeaderDeadStream, &d.Stream},
	} {
		if *f.dst, err = get(f.name); err != nil {
			return DeadLetter{}, err
		}
	}
	for _, f := range []struct {
		name string
		dst  *uint64
	}{
		{HeaderDeadDeliveries, &d.Deliveries},
		{HeaderDeadSequence, &d.Sequence},
	} {
		v, err := get(f.name)
		if err != nil {
			return DeadLetter{}, err
		}
		if v == "" {
			continue
		}
		if *f.dst, err = strconv.ParseUint(v, 10, 64); err != nil {
			return DeadLetter{}, fmt.Errorf("events: dead letter: %s: %w", f.name, err)
		}
	}
	v, err := get(HeaderDeadTime)
	if err != nil {
		return DeadLetter{}, err
	}
	if v != "" {
		if d.Time, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return DeadLetter{}, fmt.Errorf("events: dead letter: %s: %w", HeaderDeadTime, err)
		}
		d.Time = d.Time.UTC()
	}
	return d, nil
}

// headerSafe returns s as a header value: valid UTF-8, control characters (CR and LF among
// them) replaced by spaces, surrounding white space trimmed, at most max bytes.
func headerSafe(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > max {
		const ellipsis = "..."
		i := max - len(ellipsis)
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = strings.TrimSpace(s[:i]) + ellipsis
	}
	return s
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
