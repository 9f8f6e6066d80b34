//go:build linux

package blobwatch_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"

	"github.com/blobref/blobref/internal/blobwatch"
)

// TestCountsEachObjectLanding writes through fileblob as blobwriter does
// (IfNotExist, metadata sidecar): one write of an object is one landing,
// whatever temporary files and sidecars it makes; a second write of the
// same key (what a lost claim would let happen) is a second landing.
func TestCountsEachObjectLanding(t *testing.T) {
	for _, noTmpDir := range []bool{false, true} {
		t.Run(map[bool]string{false: "tmpdir", true: "no_tmp_dir"}[noTmpDir], func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "uploads"), 0o755); err != nil {
				t.Fatal(err)
			}
			bucket, err := fileblob.OpenBucket(dir, &fileblob.Options{NoTempDir: noTmpDir})
			if err != nil {
				t.Fatal(err)
			}
			defer bucket.Close()
			w, err := blobwatch.Watch(filepath.Join(dir, "uploads"))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			put := func(key string, ifNotExist bool) error {
				return bucket.WriteAll(ctx, key, []byte("bytes of "+key), &blob.WriterOptions{
					IfNotExist: ifNotExist, Metadata: map[string]string{"sha256": "x"},
				})
			}
			if err := put("uploads/a", true); err != nil {
				t.Fatal(err)
			}
			if err := put("uploads/a", true); err == nil {
				t.Fatal("second IfNotExist write of uploads/a succeeded, want a precondition failure")
			}
			if err := put("uploads/b", true); err != nil {
				t.Fatal(err)
			}
			if err := put("uploads/b", false); err != nil { // an overwrite: a duplicated side effect
				t.Fatal(err)
			}
			if err := bucket.Delete(ctx, "uploads/b"); err != nil {
				t.Fatal(err)
			}
			c, err := w.Close()
			if err != nil {
				t.Fatal(err)
			}
			if c.Writes["a"] != 1 || c.Writes["b"] != 2 || len(c.Writes) != 2 {
				t.Errorf("writes: got %v, want a:1 b:2", c.Writes)
			}
			if c.Deletes["b"] != 1 || len(c.Deletes) != 1 {
				t.Errorf("deletes: got %v, want b:1", c.Deletes)
			}
		})
	}
}
