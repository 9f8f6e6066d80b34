package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
)

// bucket is what a pipeline's services keep the blobs in, with the test's
// own evidence of what landed there. The tests about the bucket step run
// once per driver, through forEachBucket.
type bucket interface {
	// start runs service name with BLOB_URL aimed at the bucket.
	start(name string, extra ...string) *proc
	// objects returns, per upload id that has an object, evidence that
	// changes whenever the object is written again.
	objects(ids []string) map[string]string
	// writes is how many object writes the store served; ok is false when
	// the store cannot count them (the evidence of objects still holds).
	writes() (n int, ok bool)
	// checkInvariants checks the invariants against the bucket's objects.
	checkInvariants(uploads []upload)
}

// fileBucket is the pipeline's own file:// directory.
type fileBucket struct{ *pipeline }

func (b fileBucket) objects(ids []string) map[string]string {
	b.t.Helper()
	out := map[string]string{}
	for _, id := range ids {
		if _, err := os.Stat(b.objectPath(id)); err != nil {
			continue
		}
		for id, st := range b.statObjects([]string{id}) {
			out[id] = fmt.Sprint(st)
		}
	}
	return out
}

func (fileBucket) writes() (int, bool) { return 0, false }

// emulatedStore is a cloud store an emulator serves on loopback (Azurite,
// fake-gcs-server), as a cloudBucket reads it through the store's own API.
type emulatedStore interface {
	// env is BLOB_URL and what the driver needs to reach the emulator.
	env() []string
	// list returns every object by key.
	list(t *testing.T) map[string]listedObject
	// read returns an object's bytes.
	read(t *testing.T, key string) []byte
	// writes is how many object writes the emulator served.
	writes(t *testing.T) int
}

// listedObject is what a store's listing says of one object.
type listedObject struct {
	evidence    string // changes whenever the object is written again
	sha256      string // the metadata blobwriter records
	contentType string
}

// cloudBucket is a pipeline whose services keep the blobs in an emulated
// cloud store.
type cloudBucket struct {
	*pipeline
	store emulatedStore
}

func (b cloudBucket) start(name string, extra ...string) *proc {
	b.t.Helper()
	return b.pipeline.start(name, append(b.store.env(), extra...)...)
}

func (b cloudBucket) objects(ids []string) map[string]string {
	b.t.Helper()
	all, out := b.store.list(b.t), map[string]string{}
	for _, id := range ids {
		if o, ok := all["uploads/"+id]; ok {
			out[id] = o.evidence
		}
	}
	return out
}

func (b cloudBucket) writes() (int, bool) { return b.store.writes(b.t), true }

// checkInvariants checks the invariants against what the store holds, read
// back through its API (see checkStoredObjects).
func (b cloudBucket) checkInvariants(uploads []upload) {
	b.t.Helper()
	all := b.store.list(b.t)
	b.checkStoredObjects(uploads, slices.Collect(maps.Keys(all)), func(key string) storedObject {
		return storedObject{data: b.store.read(b.t, key), sha256: all[key].sha256, contentType: all[key].contentType}
	})
}

// forEachBucket runs test as a parallel subtest per bucket driver the
// services build in: file:// over a directory, and each cloud driver
// against an emulator on loopback, one per test: s3:// on MinIO, gs:// on
// fake-gcs-server, azblob:// on Azurite.
func forEachBucket(t *testing.T, test func(t *testing.T, p *pipeline, b bucket)) {
	t.Helper()
	drivers := []struct {
		name string
		open func(t *testing.T) (*pipeline, bucket)
	}{
		{"file", func(t *testing.T) (*pipeline, bucket) {
			p := newPipeline(t)
			return p, fileBucket{p}
		}},
		{"s3", func(t *testing.T) (*pipeline, bucket) {
			p := newS3Pipeline(t)
			return p.pipeline, p
		}},
		{"gs", func(t *testing.T) (*pipeline, bucket) {
			p := newGCSPipeline(t)
			return p.pipeline, p
		}},
		{"azblob", func(t *testing.T) (*pipeline, bucket) {
			p := newAzurePipeline(t)
			return p.pipeline, p
		}},
	}
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			p, b := d.open(t)
			test(t, p, b)
		})
	}
}

// storedObject is what a bucket's own API returns of one object.
type storedObject struct {
	data        []byte
	sha256      string // the metadata blobwriter records
	contentType string
}

// checkStoredObjects checks the objects a bucket holds (keys, each read
// with read) against the uploads: each carries its upload's sha256 and the
// content type blobwriter stores. Then it lays their bytes out as fileblob
// would under the pipeline's blob directory, where checkInvariants compares
// them with the uploads and the reference rows.
func (p *pipeline) checkStoredObjects(uploads []upload, keys []string, read func(key string) storedObject) {
	p.t.Helper()
	want := map[string]upload{}
	for _, u := range uploads {
		want["uploads/"+u.ID] = u
	}
	dir := filepath.Join(p.blobDir, "uploads")
	if err := os.RemoveAll(dir); err != nil {
		p.t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	for _, key := range keys {
		u, ok := want[key]
		if !ok {
			p.t.Errorf("object %s: not an accepted upload", key)
			continue
		}
		obj := read(key)
		if err := os.WriteFile(filepath.Join(dir, u.ID), obj.data, 0o644); err != nil {
			p.t.Fatal(err)
		}
		if obj.sha256 != u.sha() || obj.contentType != "application/octet-stream" {
			p.t.Errorf("object %s: got sha256 metadata %q and content type %q, want %s and application/octet-stream",
				key, obj.sha256, obj.contentType, u.sha())
		}
	}
	p.checkInvariants(uploads)
}

// Uploads of several sizes, one claim-checked and large enough for the
// drivers' multi-part writes (S3 parts and Azure blocks of 8 MiB), complete
// once with the right objects; publishing every request again writes no
// object again and re-emits every completed event.
func TestBucketRepublishWritesNothing(t *testing.T) {
	t.Parallel()
	forEachBucket(t, func(t *testing.T, p *pipeline, b bucket) {
		bw := b.start("blobwriter")
		b.start("refwriter")

		uploads := []upload{
			newUpload("rep0", 1), newUpload("rep1", 4096), newUpload("rep2", 300<<10), newUpload("rep3", 900<<10),
		}
		for _, u := range uploads {
			p.publish(u, u.ID)
		}
		big := newUpload("repbig", 9<<20)
		ev := p.publishClaimChecked(big)
		uploads = append(uploads, big)
		n := len(uploads)

		if got := p.awaitCompleted(n, 2*time.Minute); len(got) != n {
			t.Fatalf("completed: got %d distinct ids, want %d", len(got), n)
		}
		b.checkInvariants(uploads)
		objects, rows := b.objects(ids(uploads)), p.rowVersions()
		if len(objects) != n {
			t.Fatalf("objects: got %v, want one per upload", objects)
		}
		writes, counted := b.writes()
		if counted && writes != n {
			t.Errorf("object writes the store served: got %d, want %d", writes, n)
		}

		for _, u := range uploads[:n-1] {
			p.publish(u, "") // a new message for the same upload
		}
		testenv.Publish(t, p.js, ev, "")
		again := p.awaitCompleted(n, 2*time.Minute)
		for _, u := range uploads {
			if again[u.ID] != 1 {
				t.Errorf("%s: completed re-emitted %d times, want 1", u.ID, again[u.ID])
			}
		}
		if after := b.objects(ids(uploads)); !maps.Equal(after, objects) {
			t.Errorf("objects changed by the republish:\n got %v\nwant %v", after, objects)
		}
		if after, _ := b.writes(); counted && after != writes {
			t.Errorf("object writes the store served after the republish: got %d, want %d", after, writes)
		}
		if after := p.rowVersions(); !maps.Equal(after, rows) {
			t.Errorf("reference rows were rewritten by the republish")
		}
		b.checkInvariants(uploads)
		if s := bw.metric(t, "blobref_step_messages_total", `step="blob"`, `outcome="skipped"`); s != float64(n) {
			t.Errorf("blob skips: got %v, want %d", s, n)
		}
		if d := testenv.DeadLetters(t, p.js); len(d) != 0 {
			t.Errorf("dead letters: got %v, want none", d)
		}
	})
}
