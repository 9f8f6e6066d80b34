package events_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/pkg/events"
)

// formatHeader writes h as "key:value" lines, sorted, the form FuzzDecode reads.
func formatHeader(h nats.Header) string {
	var lines []string
	for k, vs := range h {
		for _, v := range vs {
			lines = append(lines, k+":"+v)
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// parseHeader reads "key:value" lines into a header; a line without a colon is a key
// with an empty value. Values are not trimmed, so the fuzzer can explore white space.
func parseHeader(s string) nats.Header {
	h := nats.Header{}
	if s == "" {
		return h
	}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, _ := strings.Cut(line, ":")
		h[k] = append(h[k], v)
	}
	return h
}

func FuzzDecode(f *testing.F) {
	req, stored, completed := chain(f)
	for _, e := range []*events.Event{req, claimChecked(f), stored, completed} {
		m, err := e.Msg(e.ID)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.Subject, formatHeader(m.Header), m.Data)

		ce, err := e.CloudEvent()
		if err != nil {
			f.Fatal(err)
		}
		body, err := json.Marshal(ce)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.Subject, "Content-Type:application/cloudevents+json", body)
	}
	e := *req
	e.Subject = `users/42 "é" 100% ☃`
	m, err := e.Msg("")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m.Subject, strings.ReplaceAll(formatHeader(m.Header), "ce-", "Ce-"), m.Data)
	f.Add(m.Subject, formatHeader(m.Header)+"\nce-subject:\"a\\\"b\"", m.Data)
	f.Add("", "", []byte(nil))
	f.Add("uploads.requested.x", "ce-specversion:1.0\nce-id:x\nce-subject:%zz", []byte("garbage"))
	f.Add("uploads.requested.x", "content-type:application/cloudevents+json", []byte(`{"specversion":"1.0","data_base64":1}`))
	f.Add("uploads.requested.x", "Content-Type:application/cloudevents+json", []byte(`{"data":[[[[[[[[[[]]]]]]]]]],"data":null}`))
	f.Add("uploads.completed.x", "Content-Type:application/cloudevents+json", []byte(`{"specversion":"1.0","time":"0000-01-01T00:00:00+01:00"}`))

	f.Fuzz(func(t *testing.T, subject, header string, body []byte) {
		e, err := events.Decode(subject, parseHeader(header), body)
		if err != nil {
			if _, ok := err.(*events.InvalidError); !ok {
				t.Fatalf("error of type %T, want *events.InvalidError: %v", err, err)
			}
			if e != nil {
				t.Fatalf("got an event with an error")
			}
			return
		}
		if err := e.Validate(0); err != nil {
			t.Fatalf("decoded event does not validate: %v", err)
		}
		m, err := e.Msg(e.ID)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := events.Decode(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatalf("decode of re-encoded event: %v\nheaders: %q", err, m.Header)
		}
		if d := equalEvents(again, e); d != "" {
			t.Fatalf("round trip changed the event: %s", d)
		}
	})
}
