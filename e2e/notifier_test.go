package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// notifyWithin is how long a test waits for a webhook delivery or a dead
// letter: the suite's usual deadline.
const notifyWithin = time.Minute

// TestNotifier runs blobwriter, refwriter and notifier as processes, with a
// real HTTP receiver, and uploads for four owners: alice (two endpoints,
// each answering 204), bob (one endpoint answering 204 and one that fails
// three times with 500 and then answers 200), carol (an endpoint nothing
// listens on) and dave (no endpoint). Each endpoint gets one delivery per
// upload, signed with its own secret (the test checks the signature);
// bob's flaky endpoint gets the delivery on its fourth try, his other
// endpoint only once; carol's upload ends in the dead-letter stream; and
// once every delivery is acknowledged, republishing the completions sends
// nothing.
func TestNotifier(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	rx := newReceiver(t, "/flaky", 3)
	dir := t.TempDir()
	closed := testenv.FreeAddr(t) // nothing listens there
	eps := p.writeEndpoints(dir, []endpointSpec{
		{"alice-1", "alice", rx.url("/ok/alice-1")},
		{"alice-2", "alice", rx.url("/ok/alice-2")},
		{"bob-ok", "bob", rx.url("/ok/bob")},
		{"bob-flaky", "bob", rx.url("/flaky")},
		{"carol", "carol", "http://" + closed + "/never"},
	})
	p.start("blobwriter")
	p.start("refwriter")
	const maxDeliveries = 5
	p.start("notifier", "NOTIFIER_ENDPOINTS_FILE="+eps.file, "NOTIFIER_ALLOW_PRIVATE=true",
		"CONSUMER_MAX_DELIVERIES="+strconv.Itoa(maxDeliveries))

	owners := map[string]string{}
	for i, owner := range []string{"alice", "alice", "alice", "bob", "carol", "dave"} {
		u := newUpload(testenv.ID(fmt.Sprintf("n%d-", i)), 200+i)
		owners[u.ID] = owner
		p.publishOwned(u, owner)
	}

	// alice's three uploads reach both her endpoints; bob's reaches his good
	// endpoint once and his flaky one on its fourth try.
	want := map[string]int{"/ok/alice-1": 3, "/ok/alice-2": 3, "/ok/bob": 1, "/flaky": 4}
	got := rx.await(t, want, notifyWithin)
	for path, reqs := range got {
		for i, r := range reqs {
			ep := eps.byPath[path]
			if path == "/flaky" && i < 3 {
				continue // the failed tries, checked below
			}
			r.verify(t, ep, owners)
		}
	}
	// Every try at one (upload, endpoint) carries the same webhook-id; each
	// (upload, endpoint) has its own.
	flaky := got["/flaky"]
	for _, r := range flaky {
		if r.id != flaky[0].id {
			t.Errorf("flaky endpoint: webhook-ids %q and %q, want one per (upload, endpoint)", flaky[0].id, r.id)
		}
		r.verify(t, eps.byPath["/flaky"], owners) // each try is signed, with its own timestamp
	}
	ids := map[string]string{}
	for path, reqs := range got {
		if path == "/flaky" {
			continue
		}
		for _, r := range reqs {
			if prev, dup := ids[r.id]; dup {
				t.Errorf("webhook-id %s sent to %s and %s", r.id, prev, path)
			}
			ids[r.id] = path
		}
	}

	// carol's endpoint is never reachable: after its last delivery, the
	// completion is dead-lettered by the notify step.
	var carol string
	for id, owner := range owners {
		if owner == "carol" {
			carol = id
		}
	}
	d, _ := testenv.AwaitDeadLetter(t, p.js, events.CompletedSubject(carol), notifyWithin)
	if d.Reason != events.ReasonRetriesExhausted || d.Step != events.StepNotify || d.Deliveries != maxDeliveries {
		t.Errorf("dead letter of %s: got reason %q, step %q, %d deliveries; want %q, %q, %d",
			carol, d.Reason, d.Step, d.Deliveries, events.ReasonRetriesExhausted, events.StepNotify, maxDeliveries)
	}

	// Every other upload is done: its marker is recorded and its message
	// acknowledged.
	p.awaitMarkers(events.StepNotify, len(owners)-1)
	last := p.awaitNotifierIdle(0)
	if n := p.pg.Count(t, `SELECT count(*) FROM webhook_deliveries`); n != 3+3+1+1 {
		t.Errorf("webhook_deliveries: got %d rows, want 8 (one per upload and endpoint delivered)", n)
	}

	// A republished completion, once its delivery was acknowledged, sends
	// nothing to anyone.
	completed := map[string]*events.Event{}
	for id, evs := range p.completed.AwaitIDs(t, len(owners), notifyWithin) {
		completed[id] = evs[0]
	}
	var lastRepublished uint64
	for id, ev := range completed {
		if id == carol {
			continue
		}
		msg, err := ev.Msg("") // a new message, not de-duplicated
		if err != nil {
			t.Fatal(err)
		}
		ack, err := p.js.PublishMsg(t.Context(), msg)
		if err != nil {
			t.Fatalf("republish %s: %v", id, err)
		}
		lastRepublished = max(lastRepublished, ack.Sequence)
	}
	if lastRepublished <= last {
		t.Fatalf("republished up to stream sequence %d, not after %d", lastRepublished, last)
	}
	p.awaitNotifierIdle(lastRepublished)
	if again := rx.counts(); !sameCounts(again, want) {
		t.Errorf("after republishing the completions: deliveries %v, want still %v", again, want)
	}
	p.awaitMarkers(events.StepNotify, len(owners)-1)
}

// TestNotifierRefusesPrivateAddresses: without NOTIFIER_ALLOW_PRIVATE, an
// endpoint whose name resolves to a loopback address is refused when the
// notifier dials it, and the upload is dead-lettered at once as
// delivery_failed; the receiver gets nothing.
func TestNotifierRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	rx := newReceiver(t, "", 0)
	u := newUpload(testenv.ID("priv-"), 100)
	eps := p.writeEndpoints(t.TempDir(), []endpointSpec{
		// localhost is a name: only the dialer sees where it points.
		{"mallory", "mallory", strings.Replace(rx.url("/ok/mallory"), "127.0.0.1", "localhost", 1)},
	})
	p.start("blobwriter")
	p.start("refwriter")
	p.start("notifier", "NOTIFIER_ENDPOINTS_FILE="+eps.file)
	p.publishOwned(u, "mallory")

	d, _ := testenv.AwaitDeadLetter(t, p.js, events.CompletedSubject(u.ID), notifyWithin)
	if d.Reason != "delivery_failed" || d.Step != events.StepNotify || d.Deliveries != 1 ||
		!strings.Contains(d.Error, "not a public address") {
		t.Errorf("dead letter: got reason %q, step %q, %d deliveries, error %q; want delivery_failed, %s, 1, a refused address",
			d.Reason, d.Step, d.Deliveries, d.Error, events.StepNotify)
	}
	if got := rx.counts(); len(got) != 0 {
		t.Errorf("receiver: got %v, want no request", got)
	}
}

// publishOwned publishes u's request on behalf of owner.
func (p *pipeline) publishOwned(u upload, owner string) {
	p.t.Helper()
	ev, err := events.NewRequested(events.Request{
		ID: u.ID, Source: "/e2e", Owner: owner, Subject: u.Subject, ContentType: "application/octet-stream",
		Time: u.Time, Data: u.Data,
	})
	if err != nil {
		p.t.Fatal(err)
	}
	testenv.Publish(p.t, p.js, ev, u.ID)
}

// awaitNotifierIdle waits until the notifier's durable consumer has been
// delivered every message up to stream sequence seq (0: whatever is in the
// stream) and has none pending or unacknowledged, and returns the last
// stream sequence delivered.
func (p *pipeline) awaitNotifierIdle(seq uint64) uint64 {
	p.t.Helper()
	deadline := time.Now().Add(notifyWithin)
	for {
		c, err := p.js.Consumer(context.Background(), events.StreamName, events.NotifierConsumer.Durable)
		var info *jetstream.ConsumerInfo
		if err == nil {
			info, err = c.Info(context.Background())
		}
		if err == nil && info.Delivered.Stream >= seq && info.NumPending == 0 && info.NumAckPending == 0 {
			return info.Delivered.Stream
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("notifier consumer not idle after %v (want delivered up to %d): %+v, %v", notifyWithin, seq, info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// endpointSpec is one line of the endpoints file the test writes.
type endpointSpec struct{ id, owner, url string }

// endpointsFile is the file the test wrote, with each endpoint's secret by
// its URL path.
type endpointsFile struct {
	file   string
	byPath map[string]testEndpoint
}

type testEndpoint struct {
	id, owner string
	key       []byte // the secret's bytes
}

// writeEndpoints writes NOTIFIER_ENDPOINTS_FILE into dir, with a fresh
// secret file for each endpoint.
func (p *pipeline) writeEndpoints(dir string, specs []endpointSpec) endpointsFile {
	p.t.Helper()
	out := endpointsFile{file: filepath.Join(dir, "endpoints.json"), byPath: map[string]testEndpoint{}}
	type entry struct {
		ID         string `json:"id"`
		Owner      string `json:"owner"`
		URL        string `json:"url"`
		SecretFile string `json:"secret_file"`
	}
	var f struct {
		Endpoints []entry `json:"endpoints"`
	}
	for _, s := range specs {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		secretFile := filepath.Join(dir, s.id+".secret")
		if err := os.WriteFile(secretFile, []byte("whsec_"+base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			p.t.Fatal(err)
		}
		f.Endpoints = append(f.Endpoints, entry{ID: s.id, Owner: s.owner, URL: s.url, SecretFile: s.id + ".secret"})
		if i := strings.Index(strings.TrimPrefix(s.url, "http://"), "/"); i >= 0 {
			out.byPath[strings.TrimPrefix(s.url, "http://")[i:]] = testEndpoint{id: s.id, owner: s.owner, key: key}
		}
	}
	raw, err := json.Marshal(f)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(out.file, raw, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return out
}

// receiver is a real HTTP server that records the webhook requests it gets.
// Requests to the flaky path fail with 500 the first fails times.
type receiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    map[string][]received
	arrived chan struct{}
}

// received is one request as the receiver saw it.
type received struct {
	id, timestamp, signature, contentType string
	body                                  []byte
}

func newReceiver(t *testing.T, flakyPath string, fails int) *receiver {
	t.Helper()
	rx := &receiver{reqs: map[string][]received{}, arrived: make(chan struct{}, 1)}
	rx.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		rx.mu.Lock()
		rx.reqs[r.URL.Path] = append(rx.reqs[r.URL.Path], received{
			id: r.Header.Get("webhook-id"), timestamp: r.Header.Get("webhook-timestamp"),
			signature: r.Header.Get("webhook-signature"), contentType: r.Header.Get("Content-Type"), body: body,
		})
		n := len(rx.reqs[r.URL.Path])
		rx.mu.Unlock()
		select {
		case rx.arrived <- struct{}{}:
		default:
		}
		switch {
		case r.URL.Path == flakyPath && n <= fails:
			http.Error(w, "try again", http.StatusInternalServerError)
		case r.URL.Path == flakyPath:
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(rx.srv.Close)
	return rx
}

func (rx *receiver) url(path string) string { return rx.srv.URL + path }

// counts returns the number of requests per path.
func (rx *receiver) counts() map[string]int {
	rx.mu.Lock()
	defer rx.mu.Unlock()
	out := map[string]int{}
	for path, reqs := range rx.reqs {
		out[path] = len(reqs)
	}
	return out
}

// await waits until the receiver has had want requests per path, and
// returns them. More requests than wanted on a path fail the test.
func (rx *receiver) await(t *testing.T, want map[string]int, within time.Duration) map[string][]received {
	t.Helper()
	deadline := time.After(within)
	for {
		got := rx.counts()
		for path, n := range got {
			if n > want[path] {
				t.Fatalf("receiver: %d requests to %s, want %d", n, path, want[path])
			}
		}
		if sameCounts(got, want) {
			rx.mu.Lock()
			defer rx.mu.Unlock()
			out := map[string][]received{}
			for path, reqs := range rx.reqs {
				out[path] = append([]received(nil), reqs...)
			}
			return out
		}
		select {
		case <-rx.arrived:
		case <-deadline:
			t.Fatalf("receiver: got %v after %v, want %v", got, within, want)
		}
	}
}

func sameCounts(got, want map[string]int) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// verify checks a request as a Standard Webhooks receiver does: the
// signature is v1 and the base64 HMAC-SHA256 under the endpoint's secret of
// "id.timestamp.body", the timestamp is recent, and the body is the
// completed upload of one of the endpoint owner's uploads.
func (r received) verify(t *testing.T, ep testEndpoint, owners map[string]string) {
	t.Helper()
	if !strings.HasPrefix(r.id, "msg_") || strings.Contains(r.id, ".") {
		t.Errorf("%s: webhook-id %q, want msg_ and no dot", ep.id, r.id)
	}
	ts, err := strconv.ParseInt(r.timestamp, 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > 5*time.Minute {
		t.Errorf("%s: webhook-timestamp %q, want the unix time of the attempt", ep.id, r.timestamp)
	}
	mac := hmac.New(sha256.New, ep.key)
	mac.Write([]byte(r.id + "." + r.timestamp + "."))
	mac.Write(r.body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(r.signature), []byte(want)) {
		t.Errorf("%s: webhook-signature %q does not verify (want %q)", ep.id, r.signature, want)
	}
	if r.contentType != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", ep.id, r.contentType)
	}
	var body struct {
		Type      string           `json:"type"`
		Timestamp time.Time        `json:"timestamp"`
		Data      events.Reference `json:"data"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("%s: body %s: %v", ep.id, r.body, err)
	}
	if body.Type != "upload.completed" || owners[body.Data.ID] != ep.owner || body.Data.Owner != ep.owner ||
		body.Data.Blob.Key != "uploads/"+body.Data.ID || body.Data.Subject != "users/"+body.Data.ID+"/avatar" ||
		!body.Timestamp.Equal(body.Data.EventTime) {
		t.Errorf("%s: body %s, want upload.completed of one of %s's uploads", ep.id, r.body, ep.owner)
	}
}
