package e2e

import (
	"fmt"
	"testing"

	"github.com/blobref/blobref/internal/testenv"
)

// newGCSPipeline is a pipeline whose services keep the blobs in a bucket of
// a Google Cloud Storage emulator (fake-gcs-server on loopback), reached as
// BLOB_URL=gs://<bucket> with STORAGE_EMULATOR_HOST.
func newGCSPipeline(t *testing.T) cloudBucket {
	t.Helper()
	gcs := testenv.StartFakeGCS(t, "blobref-e2e") // first: a failed build says so alone
	return cloudBucket{pipeline: newPipeline(t), store: gcsStore{gcs}}
}

type gcsStore struct{ gcs *testenv.FakeGCS }

func (s gcsStore) env() []string {
	return append([]string{"BLOB_URL=" + s.gcs.BlobURL()}, s.gcs.Env()...)
}

// gcsObject is the evidence that an object was not written again: every
// write gives the object a new generation (and a new update time).
type gcsObject struct {
	Generation, Metageneration, Updated, ETag string
}

// list returns what the JSON API reports of each object.
func (s gcsStore) list(t *testing.T) map[string]listedObject {
	t.Helper()
	out := map[string]listedObject{}
	for key, o := range s.gcs.Objects(t) {
		out[key] = listedObject{
			evidence:    fmt.Sprint(gcsObject{o.Generation, o.Metageneration, o.Updated, o.ETag}),
			sha256:      o.Metadata["sha256"],
			contentType: o.ContentType,
		}
	}
	return out
}

func (s gcsStore) read(t *testing.T, key string) []byte { return s.gcs.Read(t, key) }

// writes is how many uploads the server stored, from its request log.
func (s gcsStore) writes(t *testing.T) int { return s.gcs.Writes(t) }
