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
