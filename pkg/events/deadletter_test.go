package events_test

import (
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/pkg/events"
)

func TestDeadLetterRoundTrip(t *testing.T) {
	t.Parallel()
	orig := claimChecked(t)
	m, err := orig.Msg(orig.ID)
	if err != nil {
		t.Fatal(err)
	}
	m.Header.Set("Nats-Expected-Stream", "UPLOADS")
	m.Header.Set("X-Trace", "abc")
	origHeader := maps.Clone(m.Header)
	for k, v := range m.Header {
		origHeader[k] = append([]string(nil), v...)
	}

	d := events.DeadLetter{
		Reason:     events.ReasonConflict,
		Step:       "blobwriter",
		Error:      "blob exists with another digest\r\nsecond line",
		Subject:    m.Subject,
		Stream:     events.StreamName,
		Deliveries: 3,
		Sequence:   12345,
		Time:       time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC),
	}
	dm := events.DeadLetterMsg(d, m.Header, m.Data, "dlq/"+orig.ID)

	if want := "dlq.uploads.requested." + orig.ID; dm.Subject != want {
		t.Errorf("subject: got %q, want %q", dm.Subject, want)
	}
	if got := dm.Header.Get("ce-dataref"); got != orig.DataRef {
		t.Errorf("ce-dataref: got %q, want %q (the claim check travels)", got, orig.DataRef)
	}
	if got := dm.Header.Get("X-Trace"); got != "abc" {
		t.Errorf("X-Trace: got %q, want the original header", got)
	}
	if got := dm.Header.Get(events.HeaderMsgID); got != "dlq/"+orig.ID {
		t.Errorf("Nats-Msg-Id: got %q, want %q", got, "dlq/"+orig.ID)
	}
	if _, ok := dm.Header["Nats-Expected-Stream"]; ok {
		t.Errorf("Nats-Expected-Stream copied, want publish directives dropped")
	}
	if got := dm.Header.Get(events.HeaderDeadError); strings.ContainsAny(got, "\r\n") {
		t.Errorf("error header not header-safe: %q", got)
	}
	for k, v := range origHeader {
		if got := m.Header[k]; len(got) != len(v) || got[0] != v[0] {
			t.Errorf("original header %s mutated: got %q, want %q", k, got, v)
		}
	}
	if len(m.Header) != len(origHeader) {
		t.Errorf("original header mutated: got %d keys, want %d", len(m.Header), len(origHeader))
	}

	got, err := events.ParseDeadLetter(dm.Header)
	if err != nil {
		t.Fatalf("ParseDeadLetter: %v", err)
	}
	want := d
	want.Error = "blob exists with another digest  second line"
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}

	// The original event still decodes from the dead letter.
	ev, err := events.Decode(m.Subject, dm.Header, dm.Data)
	if err != nil {
		t.Fatalf("Decode of the dead letter's event: %v", err)
	}
	if d := equalEvents(ev, orig); d != "" {
		t.Error(d)
	}

	// Dead-lettering a dead letter replaces the Blobref-Dead-* headers.
	d2 := d
	d2.Reason, d2.Error = events.ReasonRetriesExhausted, ""
	dm2 := events.DeadLetterMsg(d2, dm.Header, dm.Data, "")
	if _, ok := dm2.Header[events.HeaderMsgID]; ok {
		t.Errorf("Nats-Msg-Id set, want omitted")
	}
	got2, err := events.ParseDeadLetter(dm2.Header)
	if err != nil {
		t.Fatal(err)
	}
	if got2.Reason != events.ReasonRetriesExhausted || got2.Error != "" {
		t.Errorf("got %+v, want reason %q and no error", got2, events.ReasonRetriesExhausted)
	}
}

func TestDeadLetterTruncatesError(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 1000) // 2000 bytes
	dm := events.DeadLetterMsg(events.DeadLetter{Reason: events.ReasonInvalid, Subject: "uploads.requested.x", Error: long}, nil, nil, "")
	got := dm.Header.Get(events.HeaderDeadError)
	if len(got) > 1024 || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
		t.Errorf("got %d bytes (valid UTF-8: %v), want at most 1024 ending in ...", len(got), utf8.ValidString(got))
	}
	d, err := events.ParseDeadLetter(dm.Header)
	if err != nil {
		t.Fatal(err)
	}
	if d.Time.IsZero() {
		t.Errorf("zero Time not defaulted to now")
	}
}

func TestParseDeadLetterErrors(t *testing.T) {
	t.Parallel()
	for name, h := range map[string]nats.Header{
		"no reason":       {events.HeaderDeadStep: {"blobwriter"}},
		"bad deliveries":  {events.HeaderDeadReason: {"invalid"}, events.HeaderDeadDeliveries: {"x"}},
		"bad sequence":    {events.HeaderDeadReason: {"invalid"}, events.HeaderDeadSequence: {"-1"}},
		"bad time":        {events.HeaderDeadReason: {"invalid"}, events.HeaderDeadTime: {"yesterday"}},
		"reason repeated": {events.HeaderDeadReason: {"invalid", "conflict"}},
	} {
		if _, err := events.ParseDeadLetter(h); err == nil {
			t.Errorf("%s: got nil error", name)
		} else if !strings.HasPrefix(err.Error(), "events: dead letter: ") {
			t.Errorf("%s: error %q", name, err)
		}
	}
	// Names are matched case-insensitively.
	d, err := events.ParseDeadLetter(nats.Header{"blobref-dead-reason": {"conflict"}, "BLOBREF-DEAD-SEQUENCE": {"9"}})
	if err != nil || d.Reason != "conflict" || d.Sequence != 9 {
		t.Errorf("got %+v, %v, want reason conflict sequence 9", d, err)
	}
}
