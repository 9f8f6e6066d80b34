package e2e

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/blobref/blobref/internal/testenv"
)

// gcsPipeline is a pipeline whose services keep the blobs in a bucket of a
// Google Cloud Storage emulator (fake-gcs-server on loopback), reached as
// BLOB_URL=gs://<bucket> with STORAGE_EMULATOR_HOST.
type gcsPipeline struct {
	*pipeline
	gcs *testenv.FakeGCS
}

func newGCSPipeline(t *testing.T) *gcsPipeline {
	t.Helper()
	gcs := testenv.StartFakeGCS(t, "blobref-e2e") // first: a failed build says so alone
	return &gcsPipeline{pipeline: newPipeline(t), gcs: gcs}
}

// start runs service name with BLOB_URL aimed at the bucket.
func (p *gcsPipeline) start(name string, extra ...string) *proc {
	p.t.Helper()
	env := append([]string{"BLOB_URL=" + p.gcs.BlobURL()}, p.gcs.Env()...)
	return p.pipeline.start(name, append(env, extra...)...)
}

// gcsObject is the evidence that an object was not written again: every
// write gives the object a new generation (and a new update time).
type gcsObject struct {
	Generation, Metageneration, Updated, ETag string
}

// objects returns, per upload id, what the JSON API reports of its object;
// an id without an object is left out.
func (p *gcsPipeline) objects(ids []string) map[string]string {
	p.t.Helper()
	all, out := p.gcs.Objects(p.t), map[string]string{}
	for _, id := range ids {
		if o, ok := all["uploads/"+id]; ok {
			out[id] = fmt.Sprint(gcsObject{o.Generation, o.Metageneration, o.Updated, o.ETag})
		}
	}
	return out
}

// writes is how many uploads the server stored, from its request log.
func (p *gcsPipeline) writes() (int, bool) { return p.gcs.Writes(p.t), true }

// checkInvariants checks the invariants against what the bucket holds,
// read back through the JSON API (see checkStoredObjects).
func (p *gcsPipeline) checkInvariants(uploads []upload) {
	p.t.Helper()
	all := p.gcs.Objects(p.t)
	p.checkStoredObjects(uploads, slices.Collect(maps.Keys(all)), func(key string) storedObject {
		return storedObject{data: p.gcs.Read(p.t, key), sha256: all[key].Metadata["sha256"], contentType: all[key].ContentType}
	})
}
