// Package findings reproduces, each in a minimal test, what the torture runs
// found in code outside the suite. A test here failed until its finding was
// fixed and now keeps it fixed.
package findings

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/natsproc"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/torture/internal/broker"
	"github.com/blobref/blobref/tools/torture/internal/proc"
)

// TestClaimLookupLostReplyStallsBatch: blobwriter's claim look-up
// (internal/claimcheck/claims.go, ObjectClaims.lookup:
// c.JS.ObjectStore(ctx, bucket), then store.GetInfo) sends JetStream API
// requests on the step's context, whose deadline is CONSUMER_STEP_TIMEOUT (5m
// by default). When the node that must answer stops answering without its
// connection dropping (killed in a cluster mid-request, or frozen), the
// request waits the full 5 minutes; heartbeats keep its message from being
// redelivered, and the batch runtime (pkg/step, runEffects waits for
// every effect of a batch) holds every other message of the batch too: none
// is recorded, published or acked until then. The torture cluster run stalled
// 21 uploads this way after a stream leader kill.
//
// The test freezes (SIGSTOP) the node holding the staging bucket (R1) of a
// three-node cluster, then publishes a claim-checked request and an inline
// request together to one blobwriter connected to another node. Want: the
// inline upload is stored and its blob_stored event published within 30s
// (a look-up that cannot be answered should fail within a short request
// timeout, not hold its batch for the step's deadline). Fixed: the look-up
// has a 10s deadline of its own (blobstore.lookupTimeout).
func TestClaimLookupLostReplyStallsBatch(t *testing.T) {
	frozenClaimNode(t, true)
}

// TestFrozenNodeInlineOnly is the control of
// TestClaimLookupLostReplyStallsBatch: the same frozen node and the same
// inline upload, without the claim-checked one, is stored in time.
func TestFrozenNodeInlineOnly(t *testing.T) {
	frozenClaimNode(t, false)
}

func frozenClaimNode(t *testing.T, withClaim bool) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := testenv.Build(dir, "services/blobwriter"); err != nil {
		t.Fatal(err)
	}
	bin, err := natsproc.Binary()
	if err != nil {
		t.Fatal(err)
	}
	br, err := broker.Start(ctx, bin, filepath.Join(dir, "nats"), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(br.Stop)

	// The staging bucket, R1, and where it landed.
	nc0, err := nats.Connect(br.URLs())
	if err != nil {
		t.Fatal(err)
	}
	js0, _ := jetstream.New(nc0)
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := broker.AwaitStreams(actx, js0, 3); err != nil {
		t.Fatal(err)
	}
	obs, err := js0.CreateObjectStore(actx, jetstream.ObjectStoreConfig{Bucket: "staging", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	claimed := bytes.Repeat([]byte("claim-checked "), 1000)
	for {
		// A stream just created may not serve publishes yet (no responders):
		// its leader is still being placed.
		_, err := obs.PutBytes(actx, "claim1", claimed) // a claim check names its own upload
		if err == nil {
			break
		}
		if !errors.Is(err, nats.ErrNoResponders) || actx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	holder, err := broker.StreamLeader(actx, js0, "OBJ_staging")
	if err != nil {
		t.Fatal(err)
	}
	nc0.Close()
	var other *broker.Node
	for _, n := range br.Nodes {
		if n.Name != holder {
			other = n
			break
		}
	}
	nc, err := nats.Connect(other.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)

	_, dbURL := testenv.NewSchema(t, "finding_")
	metrics := testenv.FreeAddr(t)
	bw, err := proc.Start("blobwriter", filepath.Join(dir, "blobwriter.log"), filepath.Join(dir, "blobwriter"), []string{
		"NATS_URL=" + other.URL(), "DATABASE_URL=" + dbURL, "BLOB_URL=file://" + t.TempDir(),
		"METRICS_ADDR=" + metrics, "STREAM_REPLICAS=3", "CONSUMER_ACK_WAIT=5s", "CONSUMER_BATCH_WAIT=200ms",
		"STAGING_BUCKET=staging",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			_ = syscall.Kill(bw.Pid(), syscall.SIGQUIT) // its goroutines, into the log
			time.Sleep(time.Second)
		}
		bw.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "blobwriter.log"))
			t.Logf("blobwriter log:\n%s", b)
		}
	})
	awaitReady(t, metrics)
	// /readyz can answer before the runner has created its consumer: wait
	// until it pulls.
	for deadline := time.Now().Add(time.Minute); ; {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := func() (*jetstream.ConsumerInfo, error) {
			cons, err := js.Consumer(c, events.StreamName, events.BlobWriterConsumer.Durable)
			if err != nil {
				return nil, err
			}
			return cons.Info(c)
		}()
		cancel()
		if err == nil && info.NumWaiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("blobwriter's consumer not pulling: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stored := testenv.Subscribe(t, nc, "uploads.blob.stored.>")

	// Freeze the bucket's node: its routes stay up, it answers nothing.
	n := br.Node(holder)
	pid := nodePid(t, n)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	// UPLOADS (R3) keeps a quorum on the other two nodes; wait for it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.Stream(c, events.StreamName)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("UPLOADS unavailable with %s frozen: %v", holder, err)
		}
	}

	viaClaim, err := events.NewRequested(events.Request{ID: "claim1", Source: "/finding", Subject: "s", ContentType: "text/plain",
		DataRef: "nats-object://staging/claim1", SHA256: fmt.Sprintf("%x", sha256Sum(claimed))})
	if err != nil {
		t.Fatal(err)
	}
	inline, err := events.NewRequested(events.Request{ID: "inline1", Source: "/finding", Subject: "s", ContentType: "text/plain", Data: []byte("inline")})
	if err != nil {
		t.Fatal(err)
	}
	publish := []*events.Event{inline}
	if withClaim {
		publish = []*events.Event{viaClaim, inline}
	}
	// Published one after another, each retried under its Nats-Msg-Id until
	// stored: UPLOADS may still be electing a leader away from the frozen
	// node, and a publish sent meanwhile can go unanswered (one sent
	// asynchronously and never retried left the test waiting on its ack).
	pubDeadline := time.Now().Add(time.Minute)
	for _, ev := range publish {
		msg, err := ev.Msg(ev.ID)
		if err != nil {
			t.Fatal(err)
		}
		for {
			c, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err := js.PublishMsg(c, msg)
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(pubDeadline) {
				t.Fatalf("publishing %s with %s frozen: %v", ev.ID, holder, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	start := time.Now()
	got := stored.AwaitIDs(t, 1, 30*time.Second) // fails the test after 30s
	if _, ok := got["inline1"]; !ok {
		t.Fatalf("got blob_stored of %v first, want inline1", got)
	}
	t.Logf("inline upload stored %v after publishing, with the claim's node frozen", time.Since(start))
}

func nodePid(t *testing.T, n *broker.Node) int {
	t.Helper()
	pid := n.Pid()
	if pid == 0 {
		t.Fatalf("node %s is not running", n.Name)
	}
	return pid
}

func awaitReady(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if ok, _ := readyz(addr); ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("blobwriter not ready at %s", addr)
}
