package blobstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"gocloud.dev/blob"

	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/blobwriter/internal/blobstore"
)

// claims is what a claim-check test needs: a staging Object Store bucket on
// a nats-server process of the test's own and a writer that reads claims
// from it.
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
	c.writer = &blobstore.Writer{Bucket: c.bucket, Claims: claimcheck.ObjectClaims{JS: js}}
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

func claimCheck(t testing.TB, id, dataref, sha string) *events.Event {
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
	if attrs.Metadata[events.MetadataSHA256] != ev.SHA256 {
		t.Errorf("metadata sha256: got %q, want %s", attrs.Metadata[events.MetadataSHA256], ev.SHA256)
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
		{"another bucket", claimCheck(t, "nobucket", "nats-object://no-such-bucket/nobucket", digest(data)), events.ReasonInvalid},
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
	// The configured staging bucket is missing.
	w := &blobstore.Writer{Bucket: c.bucket, Claims: claimcheck.ObjectClaims{JS: c.js}, StagingBucket: "no-such-bucket"}
	_, err := w.Store(context.Background(), claimCheck(t, "nobucket", "nats-object://no-such-bucket/nobucket", digest(data)))
	if reason, ok := permanentReason(err); !ok || reason != events.ReasonClaimMissing {
		t.Errorf("missing staging bucket: Store got %v, want a PermanentError with reason %s", err, events.ReasonClaimMissing)
	}
	if got := keys(t, c.bucket); len(got) != 0 {
		t.Errorf("keys after failed claim checks: got %q, want none", got)
	}
}

// A dataref must be nats-object://<staging bucket>/<the event's own id>:
// the staged bytes of another upload, another bucket or another scheme are
// refused as invalid before anything is read or stored.
func TestClaimCheckBoundToItsUpload(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	ctx := context.Background()
	victim := []byte("the victim's bytes")
	c.stage(t, "victim1", victim)
	other, err := c.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "other-bucket"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.PutBytes(ctx, "own1", victim); err != nil {
		t.Fatal(err)
	}
	for name, ev := range map[string]*events.Event{
		"another upload's object": claimCheck(t, "steal1", "nats-object://uploads-staging/victim1", digest(victim)),
		"another bucket":          claimCheck(t, "own1", "nats-object://other-bucket/own1", digest(victim)),
		"a path below the id":     claimCheck(t, "own2", "nats-object://uploads-staging/own2/victim1", digest(victim)),
		"another scheme":          claimCheck(t, "own3", "s3://uploads-staging/own3", digest(victim)),
	} {
		_, err := c.writer.Store(ctx, ev)
		if reason, ok := permanentReason(err); !ok || reason != events.ReasonInvalid {
			t.Errorf("%s: Store got %v, want a PermanentError with reason %s", name, err, events.ReasonInvalid)
		}
	}
	if got := keys(t, c.bucket); len(got) != 0 {
		t.Errorf("keys: got %q, want none", got)
	}
	c.assertNoConsumers(t)

	// A writer configured with another staging bucket takes only that one.
	w := &blobstore.Writer{Bucket: c.bucket, Claims: claimcheck.ObjectClaims{JS: c.js}, StagingBucket: "other-bucket"}
	if _, err := w.Store(ctx, claimCheck(t, "own1", "nats-object://other-bucket/own1", digest(victim))); err != nil {
		t.Errorf("Store from the configured staging bucket: %v", err)
	}
	_, err = w.Store(ctx, c.stage(t, "own4", victim))
	if reason, ok := permanentReason(err); !ok || reason != events.ReasonInvalid {
		t.Errorf("uploads-staging for a writer of other-bucket: got %v, want a PermanentError with reason %s", err, events.ReasonInvalid)
	}
}

// The reader's checks keep what they refuse out of the bucket: a link,
// even one named after the upload itself, is invalid, and an object whose
// info does not match its chunks is not stored (claimcheck tests each
// refusal of the reader itself).
func TestClaimCheckOfALinkIsNotStored(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	ctx := context.Background()
	data := randomBytes(t, 200<<10)
	info, err := c.staging.PutBytes(ctx, "target", data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.staging.AddLink(ctx, "linked", info); err != nil {
		t.Fatal(err)
	}
	_, err = c.writer.Store(ctx, claimCheck(t, "linked", "nats-object://uploads-staging/linked", digest(data)))
	if reason, ok := permanentReason(err); !ok || reason != events.ReasonInvalid {
		t.Errorf("Store of a link: got %v, want a PermanentError with reason %s", err, events.ReasonInvalid)
	}
	if got := keys(t, c.bucket); len(got) != 0 {
		t.Errorf("keys: got %q, want none", got)
	}
	c.assertNoConsumers(t)
}

func TestClaimCheckOfAForgedInfoIsNotStored(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	ctx := context.Background()
	data := randomBytes(t, 300<<10+3) // 3 chunks
	real, err := c.staging.PutBytes(ctx, "real", data)
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.staging.PutBytes(ctx, "other", randomBytes(t, len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for i, forge := range []func(*jetstream.ObjectInfo){
		func(i *jetstream.ObjectInfo) { i.Digest = other.Digest },
		func(i *jetstream.ObjectInfo) { i.Size-- },
		func(i *jetstream.ObjectInfo) { i.Size++ },
		func(i *jetstream.ObjectInfo) { i.Chunks-- },
		func(i *jetstream.ObjectInfo) { i.Chunks++ },
	} {
		name := fmt.Sprintf("forged%d", i)
		forged := *real
		forge(&forged)
		c.forge(t, name, forged)
		if _, err := c.writer.Store(ctx, claimCheck(t, name, "nats-object://uploads-staging/"+name, digest(data))); err == nil {
			t.Errorf("%s: Store succeeded, want an error", name)
		}
	}
	if got := keys(t, c.bucket); len(got) != 0 {
		t.Errorf("keys: got %q, want none", got)
	}
	c.assertNoConsumers(t)
}

// forge writes info as the info of object name, as a faulty writer could.
func (c *claims) forge(t *testing.T, name string, info jetstream.ObjectInfo) {
	testenv.ForgeObjectInfo(t, c.js, "uploads-staging", name, info)
}

// assertNoConsumers fails the test if a reader left a consumer behind.
func (c *claims) assertNoConsumers(t *testing.T) {
	t.Helper()
	if n := testenv.StreamConsumers(t, c.js, "OBJ_uploads-staging"); n != 0 {
		t.Errorf("consumers on OBJ_uploads-staging: got %d, want 0", n)
	}
}

// DropClaim deletes an upload's own staged object, chunks and all, with
// publishes only; it leaves alone an object another upload's event names,
// and an object already gone is no error.
func TestDropClaimDeletesOnlyItsOwnObject(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	ctx := context.Background()
	data := randomBytes(t, 1<<20+3)
	own := c.stage(t, "own", data)
	info, err := c.staging.GetInfo(ctx, "own")
	if err != nil {
		t.Fatal(err)
	}
	victim := c.stage(t, "victim", data)
	thief := claimCheck(t, "thief", victim.DataRef, victim.SHA256)

	if err := c.writer.DropClaim(ctx, thief); err != nil {
		t.Fatalf("DropClaim of another upload's object: %v", err)
	}
	if _, err := c.staging.GetInfo(ctx, "victim"); err != nil {
		t.Errorf("victim's object after a foreign event's DropClaim: %v, want it there", err)
	}
	for range 2 { // again: already gone
		if err := c.writer.DropClaim(ctx, own); err != nil {
			t.Fatalf("DropClaim: %v", err)
		}
	}
	if _, err := c.staging.GetInfo(ctx, "own"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("GetInfo after DropClaim: got %v, want ErrObjectNotFound", err)
	}
	stream, err := c.js.Stream(ctx, "OBJ_uploads-staging")
	if err != nil {
		t.Fatal(err)
	}
	chunks := "$O.uploads-staging.C." + info.NUID
	si, err := stream.Info(ctx, jetstream.WithSubjectFilter(chunks))
	if err != nil {
		t.Fatal(err)
	}
	if n := si.State.Subjects[chunks]; n != 1 {
		t.Errorf("chunk messages after DropClaim: got %d, want 1 (rolled up into an empty one)", n)
	}
}
