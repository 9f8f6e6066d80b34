package blobstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/memblob"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/services/blobwriter/internal/blobstore"
)

// countingBucket is a blobstore.Bucket that counts the writes started on it
// (whether they land or not: see etag for those that land).
type countingBucket struct {
	*blob.Bucket
	writes atomic.Int64
}

func (b *countingBucket) NewWriter(ctx context.Context, key string, opts *blob.WriterOptions) (*blob.Writer, error) {
	b.writes.Add(1)
	return b.Bucket.NewWriter(ctx, key, opts)
}

// driver is a blob driver the conformance suite runs against.
type driver struct {
	name string
	// storage returns a function that opens a bucket over one storage each
	// time it is called (as each replica of blobwriter would), and, for
	// drivers backed by a directory, that directory.
	storage func(t *testing.T) (open func() *blob.Bucket, dir string)
}

var drivers = []driver{
	{name: "file", storage: func(t *testing.T) (func() *blob.Bucket, string) {
		dir := t.TempDir()
		return func() *blob.Bucket { return openBucket(t, "file://"+dir) }, dir
	}},
	{name: "mem", storage: func(t *testing.T) (func() *blob.Bucket, string) {
		b := openBucket(t, "mem://") // memblob cannot be opened twice over one storage
		return func() *blob.Bucket { return b }, ""
	}},
}

func openBucket(t testing.TB, url string) *blob.Bucket {
	t.Helper()
	b, err := blob.OpenBucket(context.Background(), url)
	if err != nil {
		t.Fatalf("OpenBucket(%s): %v", url, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// filesIn lists every regular file under dir, relative to it, sorted.
func filesIn(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		files = append(files, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	slices.Sort(files)
	return files
}

// store is what a conformance test needs: a writer over a counting bucket.
type store struct {
	bucket *countingBucket
	writer *blobstore.Writer
	open   func() *blob.Bucket // another bucket over the same storage
	dir    string              // "" unless the driver is backed by a directory
}

func setup(t *testing.T, d driver) *store {
	t.Helper()
	open, dir := d.storage(t)
	s := &store{bucket: &countingBucket{Bucket: open()}, open: open, dir: dir}
	s.writer = &blobstore.Writer{Bucket: s.bucket}
	return s
}

// files lists every file of a store backed by a directory; nil for others.
func (s *store) files(t *testing.T) []string {
	if s.dir == "" {
		return nil
	}
	return filesIn(t, s.dir)
}

// keys lists every key in b.
func keys(t *testing.T, b *blob.Bucket) []string {
	t.Helper()
	var keys []string
	it := b.List(nil)
	for {
		obj, err := it.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return keys
		}
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		keys = append(keys, obj.Key)
	}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// request builds a requested event for id with inline data.
func request(t testing.TB, id string, data []byte) *events.Event {
	t.Helper()
	return requestOf(t, events.Request{ID: id, ContentType: "image/png", Data: data})
}

// requestOf builds a requested event from r, filling in source and subject.
func requestOf(t testing.TB, r events.Request) *events.Event {
	t.Helper()
	if r.Source == "" {
		r.Source = "/test"
	}
	if r.Subject == "" {
		r.Subject = "users/" + r.ID + "/avatar"
	}
	ev, err := events.NewRequested(r)
	if err != nil {
		t.Fatalf("NewRequested: %v", err)
	}
	return ev
}

// permanentReason returns the reason of the PermanentError in err's chain.
func permanentReason(err error) (string, bool) {
	var perm *step.PermanentError
	if errors.As(err, &perm) {
		return perm.Reason, true
	}
	return "", false
}

// put writes an object as another writer would, with the sha256 metadata of
// meta (none when meta is "").
func put(t *testing.T, b *blob.Bucket, key string, data []byte, meta string) {
	t.Helper()
	opts := &blob.WriterOptions{ContentType: "image/png"}
	if meta != "" {
		opts.Metadata = map[string]string{events.MetadataSHA256: meta}
	}
	if err := b.WriteAll(context.Background(), key, data, opts); err != nil {
		t.Fatalf("WriteAll %s: %v", key, err)
	}
}

// etag is the ETag of the object at key; both drivers derive it from the
// object's modification time, so a write that lands changes it.
func etag(t *testing.T, s *store, key string) string {
	t.Helper()
	attrs, err := s.bucket.Attributes(context.Background(), key)
	if err != nil {
		t.Fatalf("Attributes(%s): %v", key, err)
	}
	return attrs.ETag
}

func TestConformance(t *testing.T) {
	t.Parallel()
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range conformance {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, setup(t, d))
				})
			}
		})
	}
}

var conformance = []struct {
	name string
	run  func(t *testing.T, s *store)
}{
	{"InlineWriteStoresTheExactBytes", testInlineWrite},
	{"SameDigestAlreadyThereIsDone", testSameDigestAlreadyThere},
	{"OtherDigestAlreadyThereIsAConflict", testOtherDigestAlreadyThere},
	{"ObjectWithoutDigestIsAConflict", testObjectWithoutDigest},
	{"DigestMismatchLeavesNothingBehind", testDigestMismatch},
	{"CancelledWriteLeavesNothingBehind", testCancelledWrite},
	{"ResumeReportsWhatTheWriteReported", testResumeReportsSameResult},
	{"CustomKeyPrefix", testKeyPrefix},
	{"ClaimCheckWithoutClaimStoreIsRetried", testNoClaimStore},
	{"ConcurrentReplicasWriteOnce", testConcurrentReplicas},
}

func testInlineWrite(t *testing.T, s *store) {
	ctx := context.Background()
	data := randomBytes(t, 256<<10+17) // several copy buffers
	ev := request(t, "inline", data)

	got, err := s.writer.Store(ctx, ev)
	if err != nil {
		t.Fatalf("Store: %v", err)
	}
	want := events.Blob{Key: "uploads/inline", Size: int64(len(data)), SHA256: ev.SHA256, ContentType: "image/png"}
	if got != want {
		t.Errorf("Store: got %+v, want %+v", got, want)
	}
	if k := s.writer.Key("inline"); k != "uploads/inline" {
		t.Errorf("Key: got %q, want uploads/inline", k)
	}
	stored, err := s.bucket.ReadAll(ctx, "uploads/inline")
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if !bytes.Equal(stored, data) {
		t.Errorf("stored bytes: got %d bytes with sha256 %s, want %d bytes with %s", len(stored), digest(stored), len(data), ev.SHA256)
	}
	attrs, err := s.bucket.Attributes(ctx, "uploads/inline")
	if err != nil {
		t.Fatalf("Attributes: %v", err)
	}
	if attrs.ContentType != "image/png" || attrs.Metadata[events.MetadataSHA256] != ev.SHA256 || attrs.Size != int64(len(data)) {
		t.Errorf("attributes: got content type %q, metadata %v, size %d; want image/png, sha256 %s, size %d",
			attrs.ContentType, attrs.Metadata, attrs.Size, ev.SHA256, len(data))
	}
	if n := s.bucket.writes.Load(); n != 1 {
		t.Errorf("writes: got %d, want 1", n)
	}
	if got, want := keys(t, s.bucket.Bucket), []string{"uploads/inline"}; !slices.Equal(got, want) {
		t.Errorf("keys: got %q, want %q", got, want)
	}
	if s.dir != "" {
		if got, want := s.files(t), []string{"uploads/inline", "uploads/inline.attrs"}; !slices.Equal(got, want) {
			t.Errorf("files: got %q, want %q", got, want)
		}
	}
}

func testSameDigestAlreadyThere(t *testing.T, s *store) {
	ctx := context.Background()
	data := []byte("written before a crash lost the marker")
	ev := request(t, "again", data)
	put(t, s.bucket.Bucket, "uploads/again", data, ev.SHA256)
	before := etag(t, s, "uploads/again")

	got, err := s.writer.Store(ctx, ev)
	if err != nil {
		t.Fatalf("Store: %v", err)
	}
	want := events.Blob{Key: "uploads/again", Size: int64(len(data)), SHA256: ev.SHA256, ContentType: "image/png"}
	if got != want {
		t.Errorf("Store: got %+v, want %+v", got, want)
	}
	if after := etag(t, s, "uploads/again"); after != before {
		t.Errorf("object rewritten: etag %s, was %s (it was there already)", after, before)
	}
	// And storing once more is still no write.
	if again, err := s.writer.Store(ctx, ev); err != nil || again != want {
		t.Errorf("second Store: got %+v, %v; want %+v, nil", again, err, want)
	}
	if after := etag(t, s, "uploads/again"); after != before {
		t.Errorf("object rewritten by a second Store: etag %s, was %s", after, before)
	}
}

func testOtherDigestAlreadyThere(t *testing.T, s *store) {
	ctx := context.Background()
	original := []byte("the first upload of this id")
	put(t, s.bucket.Bucket, "uploads/taken", original, digest(original))
	before, err := s.bucket.Attributes(ctx, "uploads/taken")
	if err != nil {
		t.Fatal(err)
	}

	ev := request(t, "taken", []byte("other bytes, same id"))
	_, err = s.writer.Store(ctx, ev)
	if reason, ok := permanentReason(err); !ok || reason != events.ReasonConflict {
		t.Fatalf("Store: got %v, want a PermanentError with reason %s", err, events.ReasonConflict)
	}
	stored, err := s.bucket.ReadAll(ctx, "uploads/taken")
	if err != nil || !bytes.Equal(stored, original) {
		t.Errorf("object after conflict: got %q (%v), want the original %q", stored, err, original)
	}
	after, err := s.bucket.Attributes(ctx, "uploads/taken")
	if err != nil {
		t.Fatal(err)
	}
	if after.Metadata[events.MetadataSHA256] != digest(original) || after.ETag != before.ETag {
		t.Errorf("attributes after conflict: got sha256 %q etag %s, want %s etag %s",
			after.Metadata[events.MetadataSHA256], after.ETag, digest(original), before.ETag)
	}
}

func testObjectWithoutDigest(t *testing.T, s *store) {
	ctx := context.Background()
	data := []byte("same bytes, but nobody recorded their digest")
	put(t, s.bucket.Bucket, "uploads/bare", data, "")
	before := etag(t, s, "uploads/bare")
	_, err := s.writer.Store(ctx, request(t, "bare", data))
	if reason, ok := permanentReason(err); !ok || reason != events.ReasonConflict {
		t.Fatalf("Store: got %v, want a PermanentError with reason %s", err, events.ReasonConflict)
	}
	if after := etag(t, s, "uploads/bare"); after != before {
		t.Errorf("object rewritten: etag %s, was %s", after, before)
	}
}

func testDigestMismatch(t *testing.T, s *store) {
	ctx := context.Background()
	data := randomBytes(t, 64<<10)
	ev := request(t, "mismatch", data)
	ev.SHA256 = digest([]byte("what the producer claimed"))

	_, err := s.writer.Store(ctx, ev)
	if reason, ok := permanentReason(err); !ok || reason != events.ReasonDigestMismatch {
		t.Fatalf("Store: got %v, want a PermanentError with reason %s", err, events.ReasonDigestMismatch)
	}
	if got := keys(t, s.bucket.Bucket); len(got) != 0 {
		t.Errorf("keys after a digest mismatch: got %q, want none", got)
	}
	if s.dir != "" {
		if got := s.files(t); len(got) != 0 {
			t.Errorf("files after a digest mismatch: got %q, want none", got)
		}
	}
	// The key stays free for the right bytes.
	if _, err := s.writer.Store(ctx, request(t, "mismatch", data)); err != nil {
		t.Errorf("Store of the right bytes after a mismatch: %v", err)
	}
}

func testCancelledWrite(t *testing.T, s *store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.writer.Store(ctx, request(t, "cancelled", []byte("never stored")))
	if err == nil {
		t.Fatal("Store on a cancelled context: got no error, want one")
	}
	if reason, ok := permanentReason(err); ok {
		t.Errorf("Store on a cancelled context: got permanent %s, want a transient error", reason)
	}
	if got := keys(t, s.bucket.Bucket); len(got) != 0 {
		t.Errorf("keys after a cancelled write: got %q, want none", got)
	}
	if s.dir != "" {
		if got := s.files(t); len(got) != 0 {
			t.Errorf("files after a cancelled write: got %q, want none", got)
		}
	}
}

// testResumeReportsSameResult checks that a step resumed after a crash (the
// object written, its marker not) records the same result as the write did,
// whatever spelling of the media type the producer used.
func testResumeReportsSameResult(t *testing.T, s *store) {
	ctx := context.Background()
	for i, ct := range []string{"image/png", "text/plain;charset=utf-8", "Text/Plain; Charset=UTF-8", `application/x-thing; a="b c"`} {
		id := fmt.Sprintf("ct%d", i)
		ev := requestOf(t, events.Request{ID: id, ContentType: ct, Data: []byte("bytes of " + id)})
		first, err := s.writer.Store(ctx, ev)
		if err != nil {
			t.Fatalf("%s: Store: %v", ct, err)
		}
		resumed, err := s.writer.Store(ctx, ev)
		if err != nil {
			t.Fatalf("%s: resumed Store: %v", ct, err)
		}
		if resumed != first {
			t.Errorf("%s: resumed Store got %+v, want the first result %+v", ct, resumed, first)
		}
		attrs, err := s.bucket.Attributes(ctx, first.Key)
		if err != nil {
			t.Fatal(err)
		}
		if first.ContentType != attrs.ContentType {
			t.Errorf("%s: result content type %q, want what the object was stored with, %q", ct, first.ContentType, attrs.ContentType)
		}
	}
}

func testKeyPrefix(t *testing.T, s *store) {
	ctx := context.Background()
	w := &blobstore.Writer{Bucket: s.bucket, KeyPrefix: "tenant-a/blobs/"}
	if k := w.Key("x1"); k != "tenant-a/blobs/x1" {
		t.Errorf("Key: got %q, want tenant-a/blobs/x1", k)
	}
	data := []byte("prefixed")
	got, err := w.Store(ctx, request(t, "x1", data))
	if err != nil {
		t.Fatalf("Store: %v", err)
	}
	if got.Key != "tenant-a/blobs/x1" {
		t.Errorf("Store: got key %q, want tenant-a/blobs/x1", got.Key)
	}
	if stored, err := s.bucket.ReadAll(ctx, "tenant-a/blobs/x1"); err != nil || !bytes.Equal(stored, data) {
		t.Errorf("object at tenant-a/blobs/x1: got %q (%v), want %q", stored, err, data)
	}
	if got, want := keys(t, s.bucket.Bucket), []string{"tenant-a/blobs/x1"}; !slices.Equal(got, want) {
		t.Errorf("keys: got %q, want %q", got, want)
	}
	// The prefix also decides where "already there" is found.
	before := etag(t, s, "tenant-a/blobs/x1")
	if _, err := w.Store(ctx, request(t, "x1", data)); err != nil {
		t.Errorf("second Store: got %v, want nil", err)
	}
	if after := etag(t, s, "tenant-a/blobs/x1"); after != before {
		t.Errorf("second Store rewrote the object: etag %s, was %s", after, before)
	}
}

func testNoClaimStore(t *testing.T, s *store) {
	ev := requestOf(t, events.Request{ID: "claimed", ContentType: "image/png",
		DataRef: "nats-object://uploads-staging/claimed", SHA256: digest([]byte("x"))})
	_, err := s.writer.Store(context.Background(), ev)
	if err == nil {
		t.Fatal("Store: got no error, want one")
	}
	if reason, ok := permanentReason(err); ok {
		t.Errorf("Store: got permanent %s, want a transient error (retried until configured)", reason)
	}
	if got := keys(t, s.bucket.Bucket); len(got) != 0 {
		t.Errorf("keys: got %q, want none", got)
	}
}

// testConcurrentReplicas stores the same event from two writers with their
// own buckets over one storage, as two replicas would, at the same moment.
// Both get the same result and the object holds the bytes; on a directory,
// inotify counts the objects that land (as the torture suite does), so
// that a second write of the same bytes, which leaves the same object
// behind, is seen too.
func testConcurrentReplicas(t *testing.T, s *store) {
	ctx := context.Background()
	var landings func() (writes, deletes map[string]int)
	if s.dir != "" {
		uploads := filepath.Join(s.dir, "uploads")
		if err := os.MkdirAll(uploads, 0o755); err != nil {
			t.Fatal(err)
		}
		landings = watchLandings(t, uploads)
	}
	replicas := [2]*blobstore.Writer{{Bucket: s.open()}, {Bucket: s.open()}}
	const rounds = 20
	var want []string
	for i := range rounds {
		id := fmt.Sprintf("race%02d", i)
		data := randomBytes(t, 4<<10+i)
		ev := request(t, id, data)
		want = append(want, "uploads/"+id)

		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			results [2]events.Blob
			errs    [2]error
		)
		for r, w := range replicas {
			wg.Go(func() {
				<-start
				results[r], errs[r] = w.Store(ctx, ev)
			})
		}
		close(start)
		wg.Wait()
		for r := range replicas {
			if errs[r] != nil {
				t.Errorf("%s: replica %d: got %v, want no error", id, r, errs[r])
			}
		}
		if results[0] != results[1] {
			t.Errorf("%s: replicas got %+v and %+v, want the same result", id, results[0], results[1])
		}
		if results[0].Key != "uploads/"+id || results[0].Size != int64(len(data)) || results[0].SHA256 != ev.SHA256 {
			t.Errorf("%s: got %+v, want key uploads/%s, %d bytes, sha256 %s", id, results[0], id, len(data), ev.SHA256)
		}
		stored, err := s.bucket.ReadAll(ctx, "uploads/"+id)
		if err != nil || !bytes.Equal(stored, data) {
			t.Errorf("%s: stored bytes differ from the request (%v)", id, err)
		}
	}
	if got := keys(t, s.bucket.Bucket); !slices.Equal(got, want) {
		t.Errorf("keys: got %q, want exactly one object per id %q", got, want)
	}
	if s.dir != "" {
		var files []string
		for _, k := range want {
			files = append(files, k, k+".attrs")
		}
		if got := s.files(t); !slices.Equal(got, files) {
			t.Errorf("files: got %q, want %q", got, files)
		}
	}
	if landings == nil {
		return
	}
	writes, deletes := landings()
	for _, k := range want {
		name := path.Base(k)
		if n := writes[name]; n != 1 {
			t.Errorf("%s: landed %d times, want once", k, n)
		}
		if n := deletes[name]; n != 0 {
			t.Errorf("%s: removed %d times, want never", k, n)
		}
	}
}

// A request dated more than the clock skew ahead is refused as invalid and
// nothing is stored; one within it is stored.
func TestFutureTimeRefused(t *testing.T) {
	t.Parallel()
	s := setup(t, drivers[0])
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	s.writer.Now = func() time.Time { return now }
	for _, tc := range []struct {
		id     string
		at     time.Time
		skew   time.Duration
		refuse bool
	}{
		{"in2099", time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), 0, true},
		{"in6min", now.Add(6 * time.Minute), 0, true},
		{"in5min", now.Add(5 * time.Minute), 0, false},
		{"in1h", now.Add(time.Hour), 2 * time.Hour, false},
		{"in3h", now.Add(3 * time.Hour), 2 * time.Hour, true},
		{"yesterday", now.Add(-24 * time.Hour), 0, false},
	} {
		s.writer.MaxClockSkew = tc.skew
		_, err := s.writer.Store(context.Background(), requestOf(t, events.Request{ID: tc.id, ContentType: "image/png", Time: tc.at, Data: []byte(tc.id)}))
		switch {
		case tc.refuse && events.ReasonOf(err) != events.ReasonInvalid:
			t.Errorf("%s: got %v, want an invalid time", tc.id, err)
		case !tc.refuse && err != nil:
			t.Errorf("%s: got %v, want it stored", tc.id, err)
		}
	}
	want := []string{"uploads/in1h", "uploads/in5min", "uploads/yesterday"}
	if got := keys(t, s.bucket.Bucket); !slices.Equal(got, want) {
		t.Errorf("keys: got %q, want %q", got, want)
	}
}
