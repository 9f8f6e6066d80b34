package e2e

import (
	"fmt"
	"os"
	"testing"
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

// forEachBucket runs test as a parallel subtest per bucket driver: file://
// over a directory, and s3:// on a real S3 server (MinIO on loopback).
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
	}
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			p, b := d.open(t)
			test(t, p, b)
		})
	}
}
