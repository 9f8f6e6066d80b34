package e2e

import (
	"fmt"
	"testing"

	"github.com/blobref/blobref/internal/testenv"
)

// newAzurePipeline is a pipeline whose services keep the blobs in a
// container of an Azure Blob Storage emulator (Azurite on loopback),
// reached as BLOB_URL=azblob://<container>?localemu=true&protocol=http&domain=<host>
// with the emulator's well-known account and key.
func newAzurePipeline(t *testing.T) cloudBucket {
	t.Helper()
	az := testenv.StartAzurite(t, "blobref-e2e") // first: a failed install says so alone
	return cloudBucket{pipeline: newPipeline(t), store: azureStore{az}}
}

type azureStore struct{ az *testenv.Azurite }

func (s azureStore) env() []string {
	return append([]string{"BLOB_URL=" + s.az.BlobURL()}, s.az.Env()...)
}

// azureObject is the evidence that a blob was not written again: every
// write gives the blob a new ETag (and Last-Modified, to the second).
type azureObject struct {
	ETag, LastModified, Created string
}

// list returns what List Blobs reports of each blob.
func (s azureStore) list(t *testing.T) map[string]listedObject {
	t.Helper()
	out := map[string]listedObject{}
	for key, b := range s.az.Blobs(t) {
		out[key] = listedObject{
			evidence:    fmt.Sprint(azureObject{b.Properties.ETag, b.Properties.LastModified, b.Properties.Created}),
			sha256:      b.Meta("sha256"),
			contentType: b.Properties.ContentType,
		}
	}
	return out
}

func (s azureStore) read(t *testing.T, key string) []byte { return s.az.Read(t, key) }

// writes is how many blobs the server stored, from its access log.
func (s azureStore) writes(t *testing.T) int { return s.az.Writes(t) }
