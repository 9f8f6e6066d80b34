package events_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
)

// A producer builds a requested event and encodes it in binary content mode. ingest uploads
// on behalf of its authenticated caller, the owner; a producer that leaves Owner empty owns
// its subjects under its source.
func ExampleNewRequested() {
	e, err := events.NewRequested(events.Request{
		ID:          "abc123",
		Source:      "/blobref/ingest",
		Owner:       "alice",
		Subject:     "users/42/avatar é",
		ContentType: "text/plain",
		Time:        time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Data:        []byte("hello"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := e.Msg(e.ID) // a producer's Nats-Msg-Id is the upload id
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("subject:", m.Subject)
	for _, k := range slices.Sorted(maps.Keys(m.Header)) {
		fmt.Printf("%s: %s\n", k, m.Header.Get(k))
	}
	fmt.Printf("body: %s\n", m.Data)
	// Output:
	// subject: uploads.requested.abc123
	// Nats-Msg-Id: abc123
	// ce-datacontenttype: text/plain
	// ce-id: abc123
	// ce-owner: alice
	// ce-sha256: 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
	// ce-source: /blobref/ingest
	// ce-specversion: 1.0
	// ce-subject: users/42/avatar%20%C3%A9
	// ce-time: 2025-01-02T03:04:05Z
	// ce-type: io.blobref.upload.requested.v1
	// body: hello
}

// A consumer decodes the message it was delivered; header names may come in any case.
func ExampleDecode() {
	header := nats.Header{
		"Ce-Specversion":     {"1.0"},
		"Ce-Id":              {"abc123"},
		"Ce-Source":          {"/cli"},
		"Ce-Type":            {events.TypeRequested},
		"Ce-Subject":         {"users/42/avatar"},
		"Ce-Time":            {"2025-01-02T04:04:05+01:00"},
		"Ce-Datacontenttype": {"text/plain"},
		"Ce-Sha256":          {"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
		"Nats-Msg-Id":        {"abc123"},
	}
	e, err := events.Decode("uploads.requested.abc123", header, []byte("hello"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(e.ID, e.Owner, e.Subject, e.Time.Format(time.RFC3339), e.ContentType, string(e.Data))

	// A message whose id is not the subject's last token is refused, naming the attribute.
	_, err = events.Decode("uploads.requested.other", header, []byte("hello"))
	fmt.Println(err, "/", events.ReasonOf(err))
	// Output:
	// abc123 /cli users/42/avatar 2025-01-02T03:04:05Z text/plain hello
	// events: invalid: id: "abc123" does not match the subject token "other" / invalid
}

// The steps after the request: blobwriter's blob_stored and refwriter's completed copy the
// upload's id, owner, subject, time and fingerprint.
func ExampleNewBlobStored() {
	req, _ := events.NewRequested(events.Request{
		ID: "abc123", Source: "/blobref/ingest", Owner: "alice", Subject: "users/42/avatar", ContentType: "text/plain",
		Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Data: []byte("hello"),
	})
	blob := events.Blob{Key: "uploads/abc123", Size: 5, SHA256: req.SHA256, ContentType: "text/plain"}
	stored, err := events.NewBlobStored(req, blob, "/blobref/blobwriter")
	if err != nil {
		fmt.Println(err)
		return
	}
	ref := events.Reference{ID: req.ID, Owner: stored.Owner, Subject: req.Subject, Blob: blob, EventTime: req.Time}
	completed, err := events.NewCompleted(stored, ref, "/blobref/refwriter")
	if err != nil {
		fmt.Println(err)
		return
	}
	m, _ := completed.Msg(events.DerivedMsgID("refwriter", events.StreamName, 2))
	fmt.Println(m.Subject, m.Header.Get("Nats-Msg-Id"), m.Header.Get("ce-owner"))
	fmt.Printf("%s\n", m.Data)
	// Output:
	// uploads.completed.abc123 refwriter/UPLOADS/2 alice
	// {"id":"abc123","owner":"alice","subject":"users/42/avatar","blob":{"key":"uploads/abc123","size":5,"sha256":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","contentType":"text/plain"},"eventTime":"2025-01-02T03:04:05Z"}
}

// A producer checks what a caller sent against the contract before it records or stages
// anything, so that the event it publishes later cannot be refused.
func ExampleCheckSubject() {
	for _, s := range []string{"users/42/avatar", "users/42/../43/avatar", "users/42/\u202egnp.exe"} {
		fmt.Println(events.CheckSubject(s))
	}
	fmt.Println(events.CheckContentType("image/png"))
	fmt.Println(events.CheckContentType("image/png; x=" + strings.Repeat("y", 300)))
	// Output:
	// <nil>
	// events: invalid: subject: has a ".." segment
	// events: invalid: subject: contains U+202E, a format character
	// <nil>
	// events: invalid: datacontenttype: longer than 256 bytes
}

// A consumer refuses an event dated too far in the future.
func ExampleEvent_CheckTime() {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	e, _ := events.NewRequested(events.Request{
		ID: "abc123", Source: "/cli", Subject: "users/42/avatar", ContentType: "text/plain",
		Time: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), Data: []byte("hello"),
	})
	err := e.CheckTime(now, events.DefaultMaxClockSkew)
	fmt.Println(events.ReasonOf(err), err != nil)
	e.Time = now.Add(time.Minute) // a clock a minute ahead is fine
	fmt.Println(e.CheckTime(now, events.DefaultMaxClockSkew))
	// Output:
	// invalid true
	// <nil>
}

// A step that gives up dead-letters the original message with the reason.
func ExampleDeadLetterMsg() {
	orig := nats.Header{"ce-id": {"abc123"}, "Nats-Msg-Id": {"abc123"}}
	m := events.DeadLetterMsg(events.DeadLetter{
		Reason:     events.ReasonConflict,
		Step:       "blobwriter",
		Error:      "sha256 differs from the stored blob",
		Subject:    "uploads.requested.abc123",
		Stream:     events.StreamName,
		Deliveries: 1,
		Sequence:   7,
		Time:       time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}, orig, []byte("hello"), "blobwriter/UPLOADS/7/dlq")
	fmt.Println(m.Subject)
	d, _ := events.ParseDeadLetter(m.Header)
	fmt.Println(d.Reason, d.Step, d.Sequence, d.Error)
	// Output:
	// dlq.uploads.requested.abc123
	// conflict blobwriter 7 sha256 differs from the stored blob
}

// A producer makes sure the streams exist and publishes with JetStream, which
// de-duplicates on Nats-Msg-Id. (Compiled, not run: it needs a server.)
func ExampleEnsureStreams() {
	ctx := context.Background()
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{Replicas: 3}); err != nil {
		fmt.Println(err)
		return
	}
	e, err := events.NewRequested(events.Request{
		ID: "abc123", Source: "/blobref/ingest", Subject: "users/42/avatar",
		ContentType: "text/plain", Data: []byte("hello"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := e.Msg(e.ID)
	if err != nil {
		fmt.Println(err)
		return
	}
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ack.Stream, ack.Sequence, ack.Duplicate)
}
