package e2e

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/blobref/blobref/internal/testenv"
)

// azurePipeline is a pipeline whose services keep the blobs in a container
// of an Azure Blob Storage emulator (Azurite on loopback), reached as
// BLOB_URL=azblob://<container>?localemu=true&protocol=http&domain=<host>
// with the emulator's well-known account and key.
type azurePipeline struct {
	*pipeline
	az *testenv.Azurite
}

func newAzurePipeline(t *testing.T) *azurePipeline {
	t.Helper()
	az := testenv.StartAzurite(t, "blobref-e2e") // first: a failed install says so alone
	return &azurePipeline{pipeline: newPipeline(t), az: az}
}

// start runs service name with BLOB_URL aimed at the container.
func (p *azurePipeline) start(name string, extra ...string) *proc {
	p.t.Helper()
	env := append([]string{"BLOB_URL=" + p.az.BlobURL()}, p.az.Env()...)
	return p.pipeline.start(name, append(env, extra...)...)
}

// azureObject is the evidence that a blob was not written again: every
// write gives the blob a new ETag (and Last-Modified, to the second).
type azureObject struct {
	ETag, LastModified, Created string
}

// objects returns, per upload id, what List Blobs reports of its blob; an
// id without a blob is left out.
func (p *azurePipeline) objects(ids []string) map[string]string {
	p.t.Helper()
	all, out := p.az.Blobs(p.t), map[string]string{}
	for _, id := range ids {
		if b, ok := all["uploads/"+id]; ok {
			out[id] = fmt.Sprint(azureObject{b.Properties.ETag, b.Properties.LastModified, b.Properties.Created})
		}
	}
	return out
}

// writes is how many blobs the server stored, from its access log.
func (p *azurePipeline) writes() (int, bool) { return p.az.Writes(p.t), true }

// checkInvariants checks the invariants against what the container holds,
// read back through the Blob API (see checkStoredObjects).
func (p *azurePipeline) checkInvariants(uploads []upload) {
	p.t.Helper()
	all := p.az.Blobs(p.t)
	p.checkStoredObjects(uploads, slices.Collect(maps.Keys(all)), func(key string) storedObject {
		b := all[key]
		return storedObject{data: p.az.Read(p.t, key), sha256: b.Meta("sha256"), contentType: b.Properties.ContentType}
	})
}
