package blobdrivers_test

import (
	"testing"

	"gocloud.dev/blob"

	_ "github.com/blobref/blobref/internal/blobdrivers"
)

// Built without tags, every scheme BLOB_URL documents has its driver.
func TestDefaultBuildHasEveryDriver(t *testing.T) {
	for _, scheme := range []string{"file", "mem", "s3", "gs", "azblob"} {
		if !blob.DefaultURLMux().ValidBucketScheme(scheme) {
			t.Errorf("no driver for %s://", scheme)
		}
	}
}
