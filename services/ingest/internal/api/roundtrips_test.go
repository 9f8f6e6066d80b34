package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// TestRoundTripsOfOneUpload counts what one new upload with Prefer: wait
// costs on the wire, from the POST to its 201: the Postgres round trips and
// the NATS operations of the service. A first upload warms the connections
// (prepared statements, the JetStream reply subscription) and is not
// counted.
func TestRoundTripsOfOneUpload(t *testing.T) {
	t.Parallel()
	w := &wire{}
	e := setup(t, func(o *options) { o.wire = w })

	waitFor := func(key string) []string {
		t.Helper()
		m := w.mark()
		done := make(chan reply, 1)
		go func() {
			done <- e.post(upload{key: key, body: []byte("count me " + key), header: http.Header{"Prefer": {"wait=10"}}})
		}()
		req := e.awaitRequests(uploads.ID("alice", key), 1)[0]
		e.complete(req, true)
		select {
		case r := <-done:
			r.state(t, http.StatusCreated)
		case <-time.After(timeout):
			t.Fatalf("POST %s with Prefer: wait did not answer after the upload completed", key)
		}
		return w.since(m)
	}
	waitFor("warm-up")
	ops := waitFor("counted")
	n := count(ops)
	t.Logf("one upload with Prefer: wait: %d Postgres round trips, %d NATS round trips (%d publishes, %d subscriptions, %d pings)\n%s",
		n["pg"], n["nats"], n["PUB"]+n["HPUB"], n["SUB"], n["PING"], strings.Join(ops, "\n"))
}
