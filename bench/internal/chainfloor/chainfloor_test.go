package chainfloor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"

	"github.com/blobref/blobref/bench/internal/benchtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// chain is the three roles running in this process on a schema, a
// nats-server and a bucket of the test's own.
type chain struct {
	pool   *pgxpool.Pool
	js     jetstream.JetStream
	bucket *blob.Bucket
	url    string // the front's
}

func start(t *testing.T) chain {
	t.Helper()
	pool := benchtest.Schema(t, "chaintest_")
	nc, js := benchtest.JetStream(t)
	bucket, err := fileblob.OpenBucket(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bucket.Close() })
	if err := Setup(t.Context(), pool, js); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	c := chain{pool: pool, js: js, bucket: bucket}
	for _, role := range []string{Ref, Store, Front} {
		d := Deps{Pool: pool, NC: nc, JS: js, Bucket: bucket, Ready: benchtest.Listen(t), Log: slog.New(slog.DiscardHandler)}
		if role == Front {
			d.HTTP = benchtest.Listen(t)
			c.url = "http://" + d.HTTP.Addr().String()
		}
		wg.Go(func() { errs <- Run(ctx, role, d) })
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	})
	return c
}

// post uploads body and returns the id the 201 names.
func (c chain) post(t *testing.T, body []byte) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, c.url+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	id, ok := strings.CutPrefix(resp.Header.Get("Location"), "/")
	if resp.StatusCode != http.StatusCreated || !ok || id == "" {
		t.Fatalf("POST: got %s with Location %q, want 201 with /<id>", resp.Status, resp.Header.Get("Location"))
	}
	return id
}

// counts are the rows of the floor's tables.
func (c chain) counts(t *testing.T) (uploads, refs, markers int) {
	t.Helper()
	err := c.pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM `+Uploads+`), (SELECT count(*) FROM `+Refs+`),
		(SELECT count(*) FROM `+Markers+`)`).Scan(&uploads, &refs, &markers)
	if err != nil {
		t.Fatal(err)
	}
	return uploads, refs, markers
}

// TestChain posts uploads, one at a time and then at once, and finds each,
// once answered 201, whole: its row, its object with the bytes and their
// sha256, its reference with the object's size, and both markers.
func TestChain(t *testing.T) {
	t.Parallel()
	c := start(t)
	bodies := map[string][]byte{}
	var mu sync.Mutex
	add := func(i int) {
		body := bytes.Repeat([]byte{byte(i)}, 4<<10+i)
		id := c.post(t, body)
		mu.Lock()
		bodies[id] = body
		mu.Unlock()
	}
	for i := range 5 {
		add(i)
	}
	var wg sync.WaitGroup
	for i := 5; i < 10; i++ {
		wg.Go(func() { add(i) })
	}
	wg.Wait()
	if uploads, refs, markers := c.counts(t); len(bodies) != 10 || uploads != 10 || refs != 10 || markers != 20 {
		t.Fatalf("got %d ids, %d uploads, %d references and %d markers; want 10, 10, 10 and 20", len(bodies), uploads, refs, markers)
	}
	for id, body := range bodies {
		got, err := c.bucket.ReadAll(t.Context(), KeyPrefix+id)
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("object of %s: got %d bytes (%v), want the %d posted", id, len(got), err, len(body))
		}
		attrs, err := c.bucket.Attributes(t.Context(), KeyPrefix+id)
		sum := sha256.Sum256(body)
		if err != nil || attrs.Metadata["sha256"] != hex.EncodeToString(sum[:]) {
			t.Errorf("object of %s: metadata %v (%v), want its sha256", id, attrs.Metadata, err)
		}
		var size int64
		if err := c.pool.QueryRow(t.Context(), `SELECT size FROM `+Refs+` WHERE id = $1 AND key = $2`, id, KeyPrefix+id).Scan(&size); err != nil || size != int64(len(body)) {
			t.Errorf("reference of %s: size %d (%v), want %d", id, size, err, len(body))
		}
	}
}

// TestRedelivery sends an upload's request and stored messages again, as
// a replay would: each step finds its marker and does nothing twice, and
// both messages are acked.
func TestRedelivery(t *testing.T) {
	t.Parallel()
	c := start(t)
	id := c.post(t, []byte("first"))
	for _, m := range []struct{ subject, data string }{
		{RequestedPrefix + id, "other bytes"},
		{StoredPrefix + id, KeyPrefix + id},
	} {
		msg := &nats.Msg{Subject: m.subject, Data: []byte(m.data), Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, "replay-"+m.subject)
		if _, err := c.js.PublishMsg(t.Context(), msg); err != nil {
			t.Fatal(err)
		}
	}
	for role, cfg := range consumerOf {
		deadline := time.Now().Add(10 * time.Second)
		for {
			cons, err := c.js.Consumer(t.Context(), StreamName, cfg.Durable)
			if err != nil {
				t.Fatal(err)
			}
			info := cons.CachedInfo()
			if info.Delivered.Consumer == 2 && info.NumAckPending == 0 && info.NumPending == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: got %d delivered, %d pending acks, %d pending; want 2, 0 and 0", role, info.Delivered.Consumer, info.NumAckPending, info.NumPending)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if uploads, refs, markers := c.counts(t); uploads != 1 || refs != 1 || markers != 2 {
		t.Errorf("got %d uploads, %d references and %d markers; want 1, 1 and 2", uploads, refs, markers)
	}
	if got, err := c.bucket.ReadAll(t.Context(), KeyPrefix+id); err != nil || string(got) != "first" {
		t.Errorf("object: got %q (%v), want the first bytes", got, err)
	}
	stream, err := c.js.Stream(t.Context(), StreamName)
	if err != nil {
		t.Fatal(err)
	}
	// The three first messages and the two replayed; the steps' publishes
	// again were de-duplicated.
	if n := stream.CachedInfo().State.Msgs; n != 5 {
		t.Errorf("%d messages in the stream, want 5", n)
	}
}

// TestUnknownRole: Run refuses a role it does not have.
func TestUnknownRole(t *testing.T) {
	t.Parallel()
	err := Run(t.Context(), "frontdoor", Deps{})
	if err == nil || !strings.Contains(err.Error(), `no role "frontdoor"`) {
		t.Fatalf("got %v, want an error naming the role", err)
	}
}
