package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"

	"github.com/blobref/blobref/internal/testenv"
)

// s3Pipeline is a pipeline whose services keep the blobs in a bucket of a
// real S3 server (MinIO on loopback) rather than a file:// directory.
type s3Pipeline struct {
	*pipeline
	minio  *testenv.MinIO
	bucket *blob.Bucket // the services' bucket, for the test to read
	s3     *s3.Client   // the server's API, for what gocloud.dev does not do
}

func newS3Pipeline(t *testing.T) *s3Pipeline {
	t.Helper()
	return newS3PipelineOn(t, testenv.StartMinIO(t, "blobref-e2e"))
}

// newS3PipelineOn is newS3Pipeline on MinIO server m, whose Bucket the
// services use.
func newS3PipelineOn(t *testing.T, m *testenv.MinIO) *s3Pipeline {
	t.Helper()
	p := &s3Pipeline{pipeline: newPipeline(t), minio: m}
	client := s3.New(s3.Options{
		Region:       p.minio.Region,
		BaseEndpoint: aws.String(p.minio.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(p.minio.AccessKey, p.minio.SecretKey, ""),
	})
	b, err := s3blob.OpenBucket(context.Background(), client, p.minio.Bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	p.bucket, p.s3 = b, client
	return p
}

// start runs service name with BLOB_URL aimed at the S3 bucket.
func (p *s3Pipeline) start(name string, extra ...string) *proc {
	p.t.Helper()
	return p.pipeline.start(name, p.env(extra)...)
}

// launch is start without the wait for /readyz (pipeline.launch).
func (p *s3Pipeline) launch(name string, extra ...string) *proc {
	p.t.Helper()
	return p.pipeline.launch(name, p.env(extra)...)
}

// env is extra after the settings that aim a service at the S3 bucket.
func (p *s3Pipeline) env(extra []string) []string {
	return append(append([]string{"BLOB_URL=" + p.minio.BlobURL()}, p.minio.Env()...), extra...)
}

// s3Object is the evidence that an object was not written again: S3 gives
// a new write a new Last-Modified (ListObjects reports it to the
// millisecond), and MinIO counts the writes it served.
type s3Object struct {
	ETag     string
	Modified time.Time // HeadObject's Last-Modified, through Attributes
	Listed   time.Time // ListObjectsV2's LastModified
}

// listObjects returns every object in the bucket by key.
func (p *s3Pipeline) listObjects() map[string]s3Object {
	p.t.Helper()
	ctx := context.Background()
	out := map[string]s3Object{}
	it := p.bucket.List(nil)
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			p.t.Fatalf("list bucket: %v", err)
		}
		attrs, err := p.bucket.Attributes(ctx, obj.Key)
		if err != nil {
			p.t.Fatalf("attributes of %s: %v", obj.Key, err)
		}
		out[obj.Key] = s3Object{ETag: attrs.ETag, Modified: attrs.ModTime, Listed: obj.ModTime}
	}
}

// objects returns, per upload id, what S3 reports of its object (see
// s3Object); an id without an object is left out.
func (p *s3Pipeline) objects(ids []string) map[string]string {
	p.t.Helper()
	all, out := p.listObjects(), map[string]string{}
	for _, id := range ids {
		if o, ok := all["uploads/"+id]; ok {
			out[id] = fmt.Sprint(o)
		}
	}
	return out
}

// writes is how many objects MinIO wrote: PUTs and completed multipart
// uploads that succeeded (a conditional PUT refused with 412 wrote nothing).
func (p *s3Pipeline) writes() (int, bool) {
	p.t.Helper()
	n := 0.0
	for _, api := range []string{"PutObject", "CompleteMultipartUpload"} {
		total, failed := p.minio.Requests(p.t, api)
		n += total - failed
	}
	return int(n), true
}

// checkInvariants checks the invariants against what the S3 bucket holds,
// read back through the bucket (see checkStoredObjects).
func (p *s3Pipeline) checkInvariants(uploads []upload) {
	p.t.Helper()
	ctx := context.Background()
	p.checkStoredObjects(uploads, slices.Collect(maps.Keys(p.listObjects())), func(key string) storedObject {
		data, err := p.bucket.ReadAll(ctx, key)
		if err != nil {
			p.t.Fatalf("read %s: %v", key, err)
		}
		attrs, err := p.bucket.Attributes(ctx, key)
		if err != nil {
			p.t.Fatalf("attributes of %s: %v", key, err)
		}
		return storedObject{data: data, sha256: attrs.Metadata["sha256"], contentType: attrs.ContentType}
	})
}

// Uploads of many sizes, one claim-checked and large enough for a multipart
// upload, land in S3 with the right bytes; publishing every request again
// writes no object again, and re-emits every completed event.
func TestS3UploadsCompleteOnceAndRepublishDoesNotRewrite(t *testing.T) {
	t.Parallel()
	p := newS3Pipeline(t)
	bw := p.start("blobwriter")
	p.start("refwriter")

	const n = 40
	uploads := make([]upload, n)
	for i := range uploads[:n-1] {
		uploads[i] = newUpload(fmt.Sprintf("s3up%02d", i), 1+i*i*331)
		p.publish(uploads[i], uploads[i].ID)
	}
	big := newUpload("s3big", 9<<20) // over the S3 uploader's 8 MiB part size
	uploads[n-1] = big
	ev := p.publishClaimChecked(big)

	if got := p.awaitCompleted(n, 2*time.Minute); len(got) != n {
		t.Fatalf("completed: got %d distinct ids, want %d", len(got), n)
	}
	p.checkInvariants(uploads)
	objects, rows := p.listObjects(), p.rowVersions()
	writes, _ := p.writes()
	if writes != n {
		t.Errorf("object writes MinIO served: got %d, want %d", writes, n)
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
	if after := p.listObjects(); !maps.Equal(after, objects) {
		t.Errorf("objects changed by the republish:\n got %v\nwant %v", after, objects)
	}
	if after, _ := p.writes(); after != writes {
		t.Errorf("object writes MinIO served after the republish: got %d, want %d", after, writes)
	}
	if after := p.rowVersions(); !maps.Equal(after, rows) {
		t.Errorf("reference rows were rewritten by the republish")
	}
	p.checkInvariants(uploads)
	if s := bw.metric(t, "blobref_step_messages_total", `step="blob"`, `outcome="skipped"`); s != n {
		t.Errorf("blob skips: got %v, want %d", s, n)
	}
	if d := testenv.DeadLetters(t, p.js); len(d) != 0 {
		t.Errorf("dead letters: got %v, want none", d)
	}
}
