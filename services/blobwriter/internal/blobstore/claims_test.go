package blobstore_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"gocloud.dev/blob"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/blobwriter/internal/blobstore"
)

// claims is what a claim-check test needs: a staging Object Store bucket on
// an in-process JetStream server and a writer that reads claims from it.
type claims struct {
	js      jetstream.JetStream
	staging jetstream.ObjectStore
	bucket  *blob.Bucket
	writer  *blobstore.Writer
}

func setupClaims(t *testing.T) *claims {
	t.Helper()
	_, js := testenv.StartNATS(t).Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	staging, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "uploads-staging"})
	if err != nil {
		t.Fatalf("CreateObjectStore: %v", err)
	}
	c := &claims{js: js, staging: staging, bucket: openBucket(t, "file://"+t.TempDir())}
	c.writer = &blobstore.Writer{Bucket: c.bucket, Claims: blobstore.ObjectClaims{JS: js}}
	return c
}

// stage puts data in the staging bucket under id and returns the request
// event that claim-checks it.
func (c *claims) stage(t *testing.T, id string, data []byte) *events.Event {
	t.Helper()
	if _, err := c.staging.PutBytes(context.Background(), id, data); err != nil {
		t.Fatalf("PutBytes %s: %v", id, err)
	}
	return claimCheck(t, id, "nats-object://uploads-staging/"+id, digest(data))
}

func claimCheck(t *testing.T, id, dataref, sha string) *events.Event {
	t.Helper()
	return requestOf(t, events.Request{ID: id, ContentType: "application/octet-stream", DataRef: dataref, SHA256: sha})
}

func TestClaimCheckedBytesAreStored(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	ctx := context.Background()
	data := randomBytes(t, 3<<20+5) // several Object Store chunks, beyond the inline limit
	ev := c.stage(t, "big", data)

	got, err := c.writer.Store(ctx, ev)
	if err != nil {
		t.Fatalf("Store: %v", err)
	}
	want := events.Blob{Key: "uploads/big", Size: int64(len(data)), SHA256: ev.SHA256, ContentType: "application/octet-stream"}
	if got != want {
		t.Errorf("Store: got %+v, want %+v", got, want)
	}
	stored, err := c.bucket.ReadAll(ctx, "uploads/big")
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if !bytes.Equal(stored, data) {
		t.Errorf("stored bytes: got %d bytes with sha256 %s, want %d bytes with %s", len(stored), digest(stored), len(data), ev.SHA256)
	}
	attrs, err := c.bucket.Attributes(ctx, "uploads/big")
	if err != nil {
		t.Fatal(err)
	}
	if attrs.Metadata[blobstore.MetadataSHA256] != ev.SHA256 {
		t.Errorf("metadata sha256: got %q, want %s", attrs.Metadata[blobstore.MetadataSHA256], ev.SHA256)
	}
}

func TestClaimCheckFailures(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	data := []byte("staged bytes")
	c.stage(t, "staged", data)
	deleted := c.stage(t, "deleted", data)
	if err := c.staging.Delete(context.Background(), "deleted"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		ev         *events.Event
		wantReason string
	}{
		{"missing object", claimCheck(t, "gone", "nats-object://uploads-staging/gone", digest(data)), events.ReasonClaimMissing},
		{"deleted object", deleted, events.ReasonClaimMissing},
		{"missing bucket", claimCheck(t, "nobucket", "nats-object://no-such-bucket/nobucket", digest(data)), events.ReasonClaimMissing},
		{"not a nats-object ref", claimCheck(t, "s3ref", "s3://uploads-staging/s3ref", digest(data)), events.ReasonInvalid},
		{"no object name", claimCheck(t, "noname", "nats-object://uploads-staging", digest(data)), events.ReasonInvalid},
		{"invalid bucket name", claimCheck(t, "badbucket", "nats-object://uploads.staging/staged", digest(data)), events.ReasonInvalid},
		{"bytes differ from the event", claimCheck(t, "staged", "nats-object://uploads-staging/staged", digest([]byte("other"))), events.ReasonDigestMismatch},
	}
	for _, tt := range tests {
		_, err := c.writer.Store(context.Background(), tt.ev)
		if reason, ok := permanentReason(err); !ok || reason != tt.wantReason {
			t.Errorf("%s: Store got %v, want a PermanentError with reason %s", tt.name, err, tt.wantReason)
		}
	}
	if got := keys(t, c.bucket); len(got) != 0 {
		t.Errorf("keys after failed claim checks: got %q, want none", got)
	}
}
