package events_test

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/pkg/events"
)

const (
	testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	testTraceState  = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
)

// tracedChain is chain with the request published by a traced producer.
func tracedChain(t *testing.T) []*events.Event {
	t.Helper()
	req, err := events.NewRequested(events.Request{
		ID: testID, Source: testSource, Subject: testSubject, ContentType: "text/plain",
		Time: testTime, Data: []byte("hello"), TraceParent: testTraceParent, TraceState: testTraceState,
	})
	if err != nil {
		t.Fatalf("NewRequested: %v", err)
	}
	b := events.Blob{Key: "uploads/" + testID, Size: 5, SHA256: helloSHA, ContentType: "text/plain"}
	stored, err := events.NewBlobStored(req, b, "/blobref/blobwriter")
	if err != nil {
		t.Fatalf("NewBlobStored: %v", err)
	}
	ref := events.Reference{ID: testID, Subject: testSubject, Blob: b, EventTime: testTime}
	completed, err := events.NewCompleted(stored, ref, "/blobref/refwriter")
	if err != nil {
		t.Fatalf("NewCompleted: %v", err)
	}
	followed, err := events.Follow(req, events.TypeBlobStored, "/blobref/blobwriter", stored.Data)
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}
	return []*events.Event{req, stored, completed, followed}
}

func TestTraceContextTravels(t *testing.T) {
	t.Parallel()
	for _, e := range tracedChain(t) {
		t.Run(e.Type, func(t *testing.T) {
			// The builders copy the trace context along the chain.
			if e.TraceParent != testTraceParent || e.TraceState != testTraceState {
				t.Fatalf("built event: got %q %q, want %q %q", e.TraceParent, e.TraceState, testTraceParent, testTraceState)
			}
			m, err := e.Msg(e.ID)
			if err != nil {
				t.Fatalf("Msg: %v", err)
			}
			if got := m.Header.Get("ce-traceparent"); got != testTraceParent {
				t.Errorf("ce-traceparent: got %q, want %q", got, testTraceParent)
			}
			if got := m.Header.Get("ce-tracestate"); got != testTraceState {
				t.Errorf("ce-tracestate: got %q, want %q", got, testTraceState)
			}
			got, err := events.Decode(m.Subject, m.Header, m.Data)
			if err != nil {
				t.Fatalf("Decode binary: %v", err)
			}
			if d := equalEvents(got, e); d != "" {
				t.Errorf("binary: %s", d)
			}
			ce, err := e.CloudEvent()
			if err != nil {
				t.Fatalf("CloudEvent: %v", err)
			}
			body, err := json.Marshal(ce)
			if err != nil {
				t.Fatal(err)
			}
			got, err = events.Decode(m.Subject, nats.Header{"Content-Type": {"application/cloudevents+json"}}, body)
			if err != nil {
				t.Fatalf("Decode structured: %v\n%s", err, body)
			}
			if d := equalEvents(got, e); d != "" {
				t.Errorf("structured: %s", d)
			}
			got, err = events.FromCloudEvent(ce)
			if err != nil {
				t.Fatalf("FromCloudEvent: %v", err)
			}
			if d := equalEvents(got, e); d != "" {
				t.Errorf("FromCloudEvent: %s", d)
			}
		})
	}
}

func TestTraceContextRules(t *testing.T) {
	t.Parallel()
	later := "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-later"
	for _, tt := range []struct {
		name, parent, state, attr string
	}{
		{"none", "", "", ""},
		{"parent only", testTraceParent, "", ""},
		{"a later version with more fields", later, "k=v", ""},
		{"state without parent", "", "k=v", "tracestate"},
		{"parent with a space", " " + testTraceParent[1:], "", "traceparent"},
		{"parent flags not hex", testTraceParent[:53] + "0g", "", "traceparent"},
		{"later version joined without a dash", later[:55] + "x", "", "traceparent"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := baseEvent(t, "requested")
			e.TraceParent, e.TraceState = tt.parent, tt.state
			err := e.Validate(0)
			if tt.attr == "" {
				if err != nil {
					t.Fatalf("Validate: got %v, want nil", err)
				}
				return
			}
			wantInvalid(t, err, events.ReasonInvalid, tt.attr)
		})
	}
}
