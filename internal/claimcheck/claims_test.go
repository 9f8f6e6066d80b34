package claimcheck_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// claims is what a claim-check test needs: a staging Object Store bucket on
// a nats-server process of the test's own.
type claims struct {
	js      jetstream.JetStream
	staging jetstream.ObjectStore
}

func setupClaims(t *testing.T) *claims {
	t.Helper()
	_, js := testenv.StartNATS(t).Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	staging, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "uploads-staging"})
	if err != nil {
		t.Fatalf("CreateObjectStore: %v", err)
	}
	return &claims{js: js, staging: staging}
}

// stagingStream is the stream behind the uploads-staging bucket.
const stagingStream = "OBJ_uploads-staging"

// put stages data under name in chunks of chunkSize bytes (0: the default).
func (c *claims) put(t *testing.T, name string, data []byte, chunkSize uint32) *jetstream.ObjectInfo {
	t.Helper()
	meta := jetstream.ObjectMeta{Name: name}
	if chunkSize > 0 {
		meta.Opts = &jetstream.ObjectMetaOptions{ChunkSize: chunkSize}
	}
	info, err := c.staging.Put(context.Background(), meta, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Put %s: %v", name, err)
	}
	return info
}

// open opens the staged object name through oc.
func open(t *testing.T, ctx context.Context, oc claimcheck.ObjectClaims, name string) io.ReadCloser {
	t.Helper()
	r, err := oc.Open(ctx, "nats-object://uploads-staging/"+name)
	if err != nil {
		t.Fatalf("Open %s: %v", name, err)
	}
	return r
}

func (c *claims) stream(t *testing.T) jetstream.Stream {
	t.Helper()
	s, err := c.js.Stream(context.Background(), stagingStream)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertNoConsumers fails the test if a reader left a consumer behind.
func (c *claims) assertNoConsumers(t *testing.T) {
	t.Helper()
	if n := testenv.StreamConsumers(t, c.js, stagingStream); n != 0 {
		t.Errorf("consumers on %s: got %d, want 0", stagingStream, n)
	}
}

// chunkSeqs returns the stream sequences of the chunks of info.
func (c *claims) chunkSeqs(t *testing.T, info *jetstream.ObjectInfo) []uint64 {
	t.Helper()
	subj := "$O.uploads-staging.C." + info.NUID
	var seqs []uint64
	for seq := uint64(1); ; seq++ {
		m, err := c.stream(t).GetMsg(context.Background(), seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return seqs
		}
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, m.Sequence)
		seq = m.Sequence
	}
}

// forge writes info as the info of object name, as a faulty writer could.
func (c *claims) forge(t *testing.T, name string, info jetstream.ObjectInfo) {
	testenv.ForgeObjectInfo(t, c.js, "uploads-staging", name, info)
}

func TestClaimReaderReadsWholeObjects(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	tests := []struct {
		name      string
		size      int
		chunkSize uint32
	}{
		{"empty", 0, 0},
		{"one byte", 1, 0},
		{"one whole chunk", 128 << 10, 0},
		{"a chunk and a byte", 128<<10 + 1, 0},
		{"many small chunks", 300<<10 + 7, 1 << 10}, // more chunks than a window
		{"large chunks", 3<<20 + 1, 1 << 20},        // a window of two
	}
	for i, tt := range tests {
		data := randomBytes(t, tt.size)
		name := fmt.Sprintf("obj%d", i)
		c.put(t, name, data, tt.chunkSize)
		r := open(t, context.Background(), claimcheck.ObjectClaims{JS: c.js}, name)
		if err := iotest.TestReader(r, data); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if err := r.Close(); err != nil {
			t.Errorf("%s: Close: %v", tt.name, err)
		}
		c.assertNoConsumers(t)
	}
}

// A link is refused as invalid, whichever object or bucket it points to: a
// claim check names its upload's own staged bytes, never another's.
func TestClaimReaderRefusesLinks(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	ctx := context.Background()
	data := randomBytes(t, 200<<10)
	info := c.put(t, "target", data, 0)
	if _, err := c.staging.AddLink(ctx, "link", info); err != nil {
		t.Fatal(err)
	}
	other, err := c.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, err := other.PutBytes(ctx, "far", data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.staging.AddLink(ctx, "farlink", elsewhere); err != nil {
		t.Fatal(err)
	}
	if _, err := c.staging.AddBucketLink(ctx, "bucketlink", other); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"link", "farlink", "bucketlink"} {
		r, err := claimcheck.ObjectClaims{JS: c.js}.Open(ctx, "nats-object://uploads-staging/"+name)
		if reason, ok := permanentReason(err); !ok || reason != events.ReasonInvalid {
			t.Errorf("%s: Open got %v, want a PermanentError with reason %s", name, err, events.ReasonInvalid)
		}
		if r != nil {
			r.Close()
		}
	}
	c.assertNoConsumers(t)
	if n := testenv.StreamConsumers(t, c.js, "OBJ_elsewhere"); n != 0 {
		t.Errorf("consumers on OBJ_elsewhere: got %d, want 0", n)
	}
}

func TestClaimReaderReportsMissingChunks(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	ctx := context.Background()
	oc := claimcheck.ObjectClaims{JS: c.js}

	// Chunks gone before the read starts: Open says so.
	purged := c.put(t, "purged", randomBytes(t, 300<<10), 0)
	if err := c.stream(t).Purge(ctx, jetstream.WithPurgeSubject("$O.uploads-staging.C."+purged.NUID)); err != nil {
		t.Fatal(err)
	}
	holed := c.put(t, "holed", randomBytes(t, 300<<10), 0)
	seqs := c.chunkSeqs(t, holed)
	if err := c.stream(t).DeleteMsg(ctx, seqs[1]); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"purged", "holed"} {
		_, err := oc.Open(ctx, "nats-object://uploads-staging/"+name)
		if reason, ok := permanentReason(err); !ok || reason != events.ReasonClaimMissing {
			t.Errorf("%s: Open got %v, want a PermanentError with reason %s", name, err, events.ReasonClaimMissing)
		}
	}

	// The last chunk goes while the first are read: the read fails.
	data := randomBytes(t, 300<<10)
	cut := c.put(t, "cut", data, 1<<10)
	r := open(t, ctx, oc, "cut")
	seqs = c.chunkSeqs(t, cut)
	if err := c.stream(t).DeleteMsg(ctx, seqs[len(seqs)-1]); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if reason, ok := permanentReason(err); !ok || reason != events.ReasonClaimMissing {
		t.Errorf("cut: read %d of %d bytes with error %v, want a PermanentError with reason %s", len(got), len(data), err, events.ReasonClaimMissing)
	}
	r.Close()
	c.assertNoConsumers(t)
}

func TestClaimReaderVerifiesTheObjectInfo(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	ctx := context.Background()
	data := randomBytes(t, 300<<10+3) // 3 chunks
	info := *c.put(t, "real", data, 0)
	otherDigest := c.put(t, "other", randomBytes(t, len(data)), 0).Digest

	tests := []struct {
		name       string
		forge      func(*jetstream.ObjectInfo)
		wantReason string // "" for a transient error
	}{
		{"other digest", func(i *jetstream.ObjectInfo) { i.Digest = otherDigest }, ""},
		{"fewer bytes", func(i *jetstream.ObjectInfo) { i.Size-- }, ""},
		{"more bytes", func(i *jetstream.ObjectInfo) { i.Size++ }, ""},
		{"fewer chunks", func(i *jetstream.ObjectInfo) { i.Chunks-- }, ""},
		{"more chunks", func(i *jetstream.ObjectInfo) { i.Chunks++ }, events.ReasonClaimMissing},
	}
	for i, tt := range tests {
		name := fmt.Sprintf("forged%d", i)
		forged := info
		tt.forge(&forged)
		c.forge(t, name, forged)

		var got []byte
		r, err := claimcheck.ObjectClaims{JS: c.js}.Open(ctx, "nats-object://uploads-staging/"+name)
		if err == nil {
			got, err = io.ReadAll(r)
			r.Close()
		}
		reason, permanent := permanentReason(err)
		switch {
		case err == nil:
			t.Errorf("%s: read %d bytes and no error, want an error", tt.name, len(got))
		case tt.wantReason == "" && permanent:
			t.Errorf("%s: got %v, want a transient error", tt.name, err)
		case tt.wantReason != "" && reason != tt.wantReason:
			t.Errorf("%s: got %v, want a PermanentError with reason %s", tt.name, err, tt.wantReason)
		}
	}

	forged := info
	forged.Digest = "MD5=" + forged.Digest[len("SHA-256="):]
	c.forge(t, "md5", forged)
	if _, err := (claimcheck.ObjectClaims{JS: c.js}).Open(ctx, "nats-object://uploads-staging/md5"); !errors.Is(err, jetstream.ErrBadObjectMeta) {
		t.Errorf("md5 digest: Open got %v, want %v", err, jetstream.ErrBadObjectMeta)
	}
	c.assertNoConsumers(t)
}

func TestClaimReaderNoticesTheObjectGo(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	ctx := context.Background()
	oc := claimcheck.WithIdleCheck(claimcheck.ObjectClaims{JS: c.js}, 20*time.Millisecond)

	tests := []struct {
		name       string
		change     func(name string) error
		wantReason string // "" for a transient error: a retry reads the new object
	}{
		{"deleted", func(name string) error { return c.staging.Delete(ctx, name) }, events.ReasonClaimMissing},
		{"replaced", func(name string) error {
			_, err := c.staging.PutBytes(ctx, name, []byte("new bytes"))
			return err
		}, ""},
	}
	for _, tt := range tests {
		c.put(t, tt.name, randomBytes(t, 300<<10), 1<<10)
		r := open(t, ctx, oc, tt.name)
		if _, err := io.ReadFull(r, make([]byte, 1<<10)); err != nil {
			t.Fatalf("%s: first chunk: %v", tt.name, err)
		}
		if err := tt.change(tt.name); err != nil {
			t.Fatal(err)
		}
		_, err := io.ReadAll(r)
		reason, permanent := permanentReason(err)
		switch {
		case err == nil:
			t.Errorf("%s: read to EOF, want an error", tt.name)
		case tt.wantReason == "" && permanent:
			t.Errorf("%s: got %v, want a transient error", tt.name, err)
		case tt.wantReason != "" && reason != tt.wantReason:
			t.Errorf("%s: got %v, want a PermanentError with reason %s", tt.name, err, tt.wantReason)
		}
		r.Close()
	}
	c.assertNoConsumers(t)
}

func TestClaimReaderStops(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	c.put(t, "obj", randomBytes(t, 300<<10), 1<<10)
	oc := claimcheck.ObjectClaims{JS: c.js}

	t.Run("on cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		r := open(t, ctx, oc, "obj")
		if _, err := io.ReadFull(r, make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		cancel()
		if n, err := io.Copy(io.Discard, r); !errors.Is(err, context.Canceled) {
			t.Errorf("read after cancel: got %d more bytes and %v, want %v", n, err, context.Canceled)
		}
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		c.assertNoConsumers(t)
	})
	t.Run("on close", func(t *testing.T) {
		r := open(t, context.Background(), oc, "obj")
		if _, err := io.ReadFull(r, make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if n, err := io.Copy(io.Discard, r); err == nil {
			t.Errorf("read after Close: got %d more bytes and no error, want an error", n)
		}
		c.assertNoConsumers(t)
	})
}

// TestClaimReaderHoldsAWindow checks that a reader that stops reading is
// sent no more than a window of chunks.
func TestClaimReaderHoldsAWindow(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	data := randomBytes(t, 300<<10)
	c.put(t, "obj", data, 1<<10) // 300 chunks, a window of MaxWindowChunks
	r := open(t, context.Background(), claimcheck.ObjectClaims{JS: c.js}, "obj")
	defer r.Close()
	head := make([]byte, 1)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}

	delivered := func() uint64 {
		t.Helper()
		var n uint64
		for ci := range c.stream(t).ListConsumers(context.Background()).Info() {
			n += ci.Delivered.Consumer
		}
		return n
	}
	deadline := time.Now().Add(timeout)
	for delivered() < claimcheck.MaxWindowChunks && time.Now().Before(deadline) {
	}
	for range 50 {
		if n := delivered(); n != claimcheck.MaxWindowChunks {
			t.Fatalf("chunks delivered to a reader that read 1 byte: got %d, want %d", n, claimcheck.MaxWindowChunks)
		}
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(append(head, rest...), data) {
		t.Errorf("read %d bytes (%v), want the %d staged", len(rest)+1, err, len(data))
	}
}

func TestWindowChunks(t *testing.T) {
	t.Parallel()
	opts := func(chunk uint32) *jetstream.ObjectMetaOptions { return &jetstream.ObjectMetaOptions{ChunkSize: chunk} }
	tests := []struct {
		name string
		info jetstream.ObjectInfo
		want int
	}{
		{"default chunks", jetstream.ObjectInfo{Size: 1 << 30, Chunks: 8192, ObjectMeta: jetstream.ObjectMeta{Opts: opts(128 << 10)}}, 8},
		{"a short object of default chunks", jetstream.ObjectInfo{Size: 128<<10 + 1, Chunks: 2, ObjectMeta: jetstream.ObjectMeta{Opts: opts(128 << 10)}}, 8},
		{"small chunks", jetstream.ObjectInfo{Size: 1 << 20, Chunks: 1024, ObjectMeta: jetstream.ObjectMeta{Opts: opts(1 << 10)}}, claimcheck.MaxWindowChunks},
		{"chunks larger than the window", jetstream.ObjectInfo{Size: 64 << 20, Chunks: 8, ObjectMeta: jetstream.ObjectMeta{Opts: opts(8 << 20)}}, 2},
		{"no recorded chunk size", jetstream.ObjectInfo{Size: 1 << 30, Chunks: 4096}, 4},
	}
	for _, tt := range tests {
		if got := claimcheck.WindowChunks(&tt.info); got != tt.want {
			t.Errorf("%s: got %d chunks, want %d", tt.name, got, tt.want)
		}
	}
}

// A reader whose chunks stop coming while the object is still there (its
// consumer gone with a cluster node, here deleted behind its back) gives up
// after a few idle checks with a transient error, so that its step retries
// instead of holding its batch until the step's deadline.
func TestClaimReaderGivesUpOnChunksThatDoNotCome(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	ctx := context.Background()
	oc := claimcheck.WithIdleCheck(claimcheck.ObjectClaims{JS: c.js}, 50*time.Millisecond)
	c.put(t, "stalled", randomBytes(t, 300<<10), 1<<10)
	r := open(t, ctx, oc, "stalled")
	defer r.Close()
	if _, err := io.ReadFull(r, make([]byte, 1<<10)); err != nil {
		t.Fatalf("first chunk: %v", err)
	}
	lister := c.stream(t).ListConsumers(ctx)
	for ci := range lister.Info() {
		if err := c.stream(t).DeleteConsumer(ctx, ci.Name); err != nil {
			t.Fatal(err)
		}
	}
	err := await(t, func() error { _, err := io.ReadAll(r); return err })
	// Three idle checks of 50ms, the reader's context having no deadline.
	if err == nil || !strings.Contains(err.Error(), "none came for 150ms") {
		t.Fatalf("read after the consumer went: got %v, want the reader to give up on the chunk after 3 idle checks of 50ms", err)
	}
	if _, permanent := permanentReason(err); permanent {
		t.Errorf("got a permanent error %v, want a transient one (a retry reads the object again)", err)
	}
}

// await returns what fn returns, waiting for it up to the suite's deadline.
func await(t *testing.T, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		t.Fatalf("no answer within %v", timeout)
		return nil
	}
}

// lostReplies is a JetStream whose consumer creations never get a reply, as
// when the server that took the request dies with it: the request waits for
// as long as its context lets it.
type lostReplies struct {
	jetstream.JetStream
}

func (lostReplies) OrderedConsumer(ctx context.Context, _ string, _ jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// A claim read whose consumer creation gets no reply (the server that took
// the request died with it) gives up at the exchange's own deadline, with a
// transient error, instead of holding the upload until the step's deadline.
func TestClaimReadGivesUpOnALostConsumerCreation(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	c.put(t, "unanswered", randomBytes(t, 300<<10), 1<<10)
	oc := claimcheck.WithAPITimeout(claimcheck.ObjectClaims{JS: lostReplies{c.js}}, 200*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background()) // no deadline but the exchange's
	defer cancel()
	err := await(t, func() error {
		r, err := oc.Open(ctx, "nats-object://uploads-staging/unanswered")
		if err == nil {
			r.Close()
		}
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open: got %v, want the exchange's deadline exceeded", err)
	}
	if _, permanent := permanentReason(err); permanent {
		t.Errorf("got a permanent error %v, want a transient one", err)
	}
}
