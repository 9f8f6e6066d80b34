package events_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/blobref/blobref/pkg/events"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testID      = "upl_01-ABC"
	testSource  = "/blobref/ingest"
	testSubject = "users/42/avatar"
	helloSHA    = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
)

var testTime = time.Date(2025, 1, 2, 3, 4, 5, 123456000, time.UTC)

// chain builds a valid requested → blob_stored → completed chain.
func chain(t testing.TB) (req, stored, completed *events.Event) {
	t.Helper()
	req, err := events.NewRequested(events.Request{
		ID: testID, Source: testSource, Subject: testSubject, ContentType: "text/plain",
		Time: testTime, Data: []byte("hello"),
	})
	if err != nil {
		t.Fatalf("NewRequested: %v", err)
	}
	b := events.Blob{Key: "uploads/" + testID, Size: 5, SHA256: helloSHA, ContentType: "text/plain"}
	stored, err = events.NewBlobStored(req, b, "/blobref/blobwriter")
	if err != nil {
		t.Fatalf("NewBlobStored: %v", err)
	}
	ref := events.Reference{ID: testID, Subject: testSubject, Blob: b, EventTime: testTime}
	completed, err = events.NewCompleted(stored, ref, "/blobref/refwriter")
	if err != nil {
		t.Fatalf("NewCompleted: %v", err)
	}
	return req, stored, completed
}

// claimChecked builds a valid requested event whose bytes are claim-checked.
func claimChecked(t testing.TB) *events.Event {
	t.Helper()
	e, err := events.NewRequested(events.Request{
		ID: testID, Source: testSource, Subject: testSubject, ContentType: "application/octet-stream",
		Time: testTime, DataRef: "nats://objectstore/UPLOADS_DATA/" + testID, SHA256: helloSHA,
	})
	if err != nil {
		t.Fatalf("NewRequested: %v", err)
	}
	return e
}

// equalEvents reports how got and want differ, or "" when they are equal.
func equalEvents(got, want *events.Event) string {
	var diffs []string
	add := func(field string, g, w any) {
		diffs = append(diffs, field+": got "+toJSON(g)+", want "+toJSON(w))
	}
	if got.ID != want.ID {
		add("ID", got.ID, want.ID)
	}
	if got.Type != want.Type {
		add("Type", got.Type, want.Type)
	}
	if got.Source != want.Source {
		add("Source", got.Source, want.Source)
	}
	if got.Owner != want.Owner {
		add("Owner", got.Owner, want.Owner)
	}
	if got.Subject != want.Subject {
		add("Subject", got.Subject, want.Subject)
	}
	if !got.Time.Equal(want.Time) {
		add("Time", got.Time, want.Time)
	}
	if got.ContentType != want.ContentType {
		add("ContentType", got.ContentType, want.ContentType)
	}
	if got.SHA256 != want.SHA256 {
		add("SHA256", got.SHA256, want.SHA256)
	}
	if got.DataRef != want.DataRef {
		add("DataRef", got.DataRef, want.DataRef)
	}
	if got.TraceParent != want.TraceParent || got.TraceState != want.TraceState {
		add("TraceParent, TraceState", got.TraceParent+" "+got.TraceState, want.TraceParent+" "+want.TraceState)
	}
	if !bytes.Equal(got.Data, want.Data) {
		add("Data", string(got.Data), string(want.Data))
	}
	if (got.Blob == nil) != (want.Blob == nil) || got.Blob != nil && *got.Blob != *want.Blob {
		add("Blob", got.Blob, want.Blob)
	}
	switch {
	case (got.Ref == nil) != (want.Ref == nil):
		add("Ref", got.Ref, want.Ref)
	case got.Ref != nil:
		g, w := *got.Ref, *want.Ref
		if g.ID != w.ID || g.Owner != w.Owner || g.Subject != w.Subject || g.Blob != w.Blob || !g.EventTime.Equal(w.EventTime) {
			add("Ref", g, w)
		}
	}
	return strings.Join(diffs, "; ")
}

func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// wantInvalid checks that err is an *InvalidError with the given reason and attribute.
func wantInvalid(t *testing.T, err error, reason, attr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want %s on %q", reason, attr)
	}
	ie, ok := errors.AsType[*events.InvalidError](err)
	if !ok {
		t.Fatalf("got %T %v, want *events.InvalidError", err, err)
	}
	if ie.Reason != reason || ie.Attribute != attr {
		t.Fatalf("got reason %q attribute %q (%v), want %q %q", ie.Reason, ie.Attribute, err, reason, attr)
	}
	if msg := err.Error(); msg != strings.ToLower(msg[:1])+msg[1:] || !strings.HasPrefix(msg, "events: "+reason) {
		t.Fatalf("error text %q does not start with %q", msg, "events: "+reason)
	}
}

// runJetStream starts an in-process JetStream server and returns a connection to it.
func runJetStream(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return runJetStreamWith(t, natstest.DefaultTestOptions)
}

// runJetStreamWith is runJetStream with a server configured by opts.
func runJetStreamWith(t *testing.T, opts server.Options) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts.Port = -1
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	srv := natstest.RunServer(&opts)
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
