package claimcheck_test

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/pkg/events"
)

// staleAPI is the prefix under which staleReplica serves JetStream's API.
const staleAPI = "$STALE.API."

// staleReplica returns a JetStream client whose API requests (under
// staleAPI) reach the test's server as they are, except the direct gets of
// the staging bucket's object infos, which it answers as a replica that has
// not applied the objects' writes yet does: 404, no message. It counts
// those answers in forged.
func staleReplica(t *testing.T, nc *nats.Conn, forged *atomic.Int64) jetstream.JetStream {
	t.Helper()
	sub, err := nc.Subscribe(staleAPI+">", func(m *nats.Msg) {
		api := strings.TrimPrefix(m.Subject, staleAPI)
		if strings.HasPrefix(api, "DIRECT.GET."+stagingStream+".$O.uploads-staging.M.") {
			forged.Add(1)
			notFound := nats.NewMsg(m.Reply)
			notFound.Header.Set("Status", "404")
			notFound.Header.Set("Description", "Message Not Found")
			_ = nc.PublishMsg(notFound)
			return
		}
		// The server answers the requester itself, pull deliveries too.
		_ = nc.PublishMsg(&nats.Msg{Subject: "$JS.API." + api, Reply: m.Reply, Header: m.Header, Data: m.Data})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	js, err := jetstream.NewWithAPIPrefix(nc, staleAPI)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// A replica that answers "not found" for a stored object does not make it
// missing: the reader asks the bucket's leader, reads the object, and
// Delete deletes it. What the leader does not hold, or holds deleted, is
// missing (claim_missing), as before.
func TestClaimReaderAsksTheLeaderWhenAReplicaFindsNothing(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	ctx := context.Background()
	var forged atomic.Int64
	oc := claimcheck.ObjectClaims{JS: staleReplica(t, c.js.Conn(), &forged)}

	data := randomBytes(t, 300<<10+7)
	c.put(t, "stored", data, 1<<10)
	r := open(t, ctx, oc, "stored")
	if err := iotest.TestReader(r, data); err != nil {
		t.Errorf("read through a stale replica: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if forged.Load() == 0 {
		t.Fatal("the reader never asked the stale replica: the test tests nothing")
	}
	// The leader's info is GetInfo's, modification time included.
	want, err := c.staging.GetInfo(ctx, "stored")
	if err != nil {
		t.Fatal(err)
	}
	got, err := claimcheck.LeaderInfo(ctx, oc, "uploads-staging", "stored")
	if err != nil {
		t.Fatal(err)
	}
	if got.NUID != want.NUID || got.Digest != want.Digest || got.Size != want.Size || !got.ModTime.Equal(want.ModTime) {
		t.Errorf("the leader's info: got %+v, want GetInfo's %+v", got, want)
	}

	if err := oc.Delete(ctx, "nats-object://uploads-staging/stored"); err != nil {
		t.Fatalf("Delete through a stale replica: %v", err)
	}
	if _, err := c.staging.GetInfo(ctx, "stored"); err != jetstream.ErrObjectNotFound {
		t.Errorf("after Delete through a stale replica: GetInfo: %v, want %v", err, jetstream.ErrObjectNotFound)
	}

	c.put(t, "deleted", []byte("bytes"), 0)
	if err := c.staging.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"never-staged", "deleted", "stored"} {
		_, err := oc.Open(ctx, "nats-object://uploads-staging/"+name)
		if reason, _ := permanentReason(err); reason != events.ReasonClaimMissing {
			t.Errorf("Open %s: got %v, want a PermanentError with reason %s", name, err, events.ReasonClaimMissing)
		}
	}
	c.assertNoConsumers(t)
}

// Without the stale replica, the leader is not asked for what the replicas
// find: a claim read is as many API requests as before.
func TestClaimReaderAsksTheLeaderOnlyAfterNotFound(t *testing.T) {
	t.Parallel()
	c := setupClaims(t)
	ctx := context.Background()
	var gets atomic.Int64
	sub, err := c.js.Conn().Subscribe("$JS.API.STREAM.MSG.GET.>", func(*nats.Msg) { gets.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	data := randomBytes(t, 10<<10)
	c.put(t, "stored", data, 1<<10)
	r := open(t, ctx, claimcheck.ObjectClaims{JS: c.js}, "stored")
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	_, err = claimcheck.ObjectClaims{JS: c.js}.Open(ctx, "nats-object://uploads-staging/never-staged")
	if reason, _ := permanentReason(err); reason != events.ReasonClaimMissing {
		t.Fatalf("Open never-staged: got %v, want claim_missing", err)
	}
	if err := c.js.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if n := gets.Load(); n != 1 {
		t.Errorf("message gets: %d, want 1 (for the object never staged)", n)
	}
}
