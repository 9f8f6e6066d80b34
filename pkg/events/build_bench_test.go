package events_test

import (
	"testing"

	"github.com/blobref/blobref/pkg/events"
)

// BenchmarkBuildNext is what a consumer pays per message for the event it
// emits: building the next event and encoding it for JetStream.
func BenchmarkBuildNext(b *testing.B) {
	req, stored, completed := chain(b)
	b.Run("blob_stored", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e, err := events.NewBlobStored(req, *stored.Blob, "/blobref/blobwriter")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := e.Msg("blob-1"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("completed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e, err := events.NewCompleted(stored, *completed.Ref, "/blobref/refwriter")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := e.Msg("ref-1"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
