package events_test

import (
	"testing"

	"github.com/blobref/blobref/pkg/events"
)

// BenchmarkBuildNext is what a consumer pays per message for the event it
// emits: building the next event and encoding it for JetStream.
func BenchmarkBuildNext(b *testing.B) {
	req, stored, completed := chain(b)
	for _, bc := range []struct {
		name  string
		build func() (*events.Event, error)
	}{
		{"blob_stored", func() (*events.Event, error) { return events.NewBlobStored(req, *stored.Blob, "/blobref/blobwriter") }},
		{"completed", func() (*events.Event, error) {
			return events.NewCompleted(stored, *completed.Ref, "/blobref/refwriter")
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e, err := bc.build()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := e.Msg("next-1"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecode is what a consumer pays per message to read and check the
// event it consumes: blobwriter a request with 4 KiB inline, refwriter a
// blob_stored event, ingest's read model and waits a completed one.
func BenchmarkDecode(b *testing.B) {
	body := make([]byte, 4096)
	for i := range body {
		body[i] = byte(i * 7)
	}
	req, err := events.NewRequested(events.Request{
		ID: testID, Source: testSource, Subject: testSubject, ContentType: "application/octet-stream",
		Time: testTime, Data: body,
	})
	if err != nil {
		b.Fatal(err)
	}
	_, stored, completed := chain(b)
	for _, bc := range []struct {
		name string
		ev   *events.Event
	}{{"requested_4KiB", req}, {"blob_stored", stored}, {"completed", completed}} {
		msg, err := bc.ev.Msg("m-1")
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := events.Decode(msg.Subject, msg.Header, msg.Data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
