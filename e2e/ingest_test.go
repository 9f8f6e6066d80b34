package e2e

// The ingest tests send uploads over HTTP to the real ingest binary, in
// front of the real consumers, and check what the stores hold afterwards:
// each upload completes with its bytes in the bucket, and a client's retry
// after a crash of ingest, a consumer outage or a JetStream outage finishes
// the upload with every side effect done once.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// stagingBucket is ingest's default STAGING_BUCKET.
const stagingBucket = "uploads-staging"

// A small upload with Prefer: wait answers 201 with the reference; a
// 50 MiB one (claim-checked: above INLINE_THRESHOLD) answers 202, and its
// status turns completed. Both land in the bucket with the right bytes.
func TestIngestUploadsComplete(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	bw := p.start("blobwriter")
	rw := p.start("refwriter")
	in := p.startIngest("")

	small := newUpload("small", 4096)
	r := in.post(t, small, "small-key", "Prefer", "wait=30")
	st := r.state(t, http.StatusCreated)
	if want := ingestID("small-key"); st.ID != want {
		t.Errorf("upload id: got %s, want %s (sha256 of caller and key, as documented)", st.ID, want)
	}
	if got := r.header.Get("Preference-Applied"); got != "wait=30" {
		t.Errorf("Preference-Applied: got %q, want wait=30", got)
	}
	small = st.checkCompleted(t, r, small)

	large := newUpload("large", 50<<20)
	r = in.post(t, large, "large-key")
	st = r.state(t, http.StatusAccepted)
	if st.State != "pending" || st.Steps.Accepted == nil || st.Size != int64(len(large.Data)) || st.SHA256 != large.sha() {
		t.Errorf("large upload: got %+v, want pending, accepted, %d bytes with sha256 %s", st, len(large.Data), large.sha())
	}
	st = in.awaitState(t, r.header.Get("Location"), "completed")
	large = st.checkCompleted(t, r, large)
	if req := p.requestEvent(large.ID); req.DataRef != "nats-object://"+stagingBucket+"/"+large.ID || req.Data != nil {
		t.Errorf("request event of the large upload: dataref %q with %d inline bytes, want a claim check in %s", req.DataRef, len(req.Data), stagingBucket)
	}

	p.checkInvariants([]upload{small, large})
	if got := p.awaitCompleted(2, time.Minute); got[small.ID] != 1 || got[large.ID] != 1 {
		t.Errorf("completed events: got %v, want one each", got)
	}
	checkEffects(t, bw, rw, 2)
	if d := testenv.DeadLetters(t, p.js); len(d) != 0 {
		t.Errorf("dead letters: got %v, want none", d)
	}
}

// ingest SIGKILLed at each of its failpoints: the client's retry with the
// same key, to a restarted ingest, finishes the upload. Nothing is staged,
// recorded, published, written or referenced twice.
func TestIngestCrashThenRetry(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		point string
		// The retry's answer: 201 when the crash came before the upload
		// was recorded (the retry creates it), 200 after.
		status int
	}{
		{"ingest/after-stage", http.StatusCreated},
		{"ingest/after-record", http.StatusOK},
		{"ingest/after-publish", http.StatusOK},
	} {
		t.Run(strings.TrimPrefix(c.point, "ingest/"), func(t *testing.T) {
			t.Parallel()
			p := newPipeline(t)
			addr := testenv.FreeAddr(t)
			in := p.startIngest(addr, "BLOBREF_FAILPOINTS="+c.point+"=crash")

			u := newUpload("crash", 2<<20) // claim-checked
			key := "crash-key"
			if r, err := in.tryPost(u, key); err == nil {
				t.Fatalf("POST to an ingest that crashes at %s: got %d %s, want the connection to break", c.point, r.status, r.body)
			}
			in.AwaitCrash(t)
			id := ingestID(key)
			staged := p.staging(id)
			if !staged.found {
				t.Fatalf("staging bucket after the crash at %s: no object %s, want the staged body", c.point, id)
			}
			wantRows := 1
			if c.point == "ingest/after-stage" {
				wantRows = 0
			}
			if n := p.pg.Count(t, `SELECT count(*) FROM ingest_uploads`); n != wantRows {
				t.Fatalf("ingest_uploads after the crash at %s: got %d rows, want %d", c.point, n, wantRows)
			}

			// The steps start once the crash's leftovers are seen: after a
			// publish, blobwriter would store the bytes and delete their
			// claim check before the test looked.
			bw := p.start("blobwriter")
			rw := p.start("refwriter")
			in2 := p.startIngest(addr)
			r := in2.retryPost(t, u, key, "Prefer", "wait=30")
			u = r.state(t, c.status).checkCompleted(t, r, u)

			// Staged once, and deleted once stored: the two messages the
			// retry added to the bucket's stream are the deletion's (the
			// object's deleted mark, its chunks rolled up).
			if after := p.staging(id); after.found || after.objects != 0 || after.lastSeq != staged.lastSeq+2 {
				t.Errorf("staging bucket after the retry: got %+v, want no object and two messages (the deletion) after the first attempt's %+v", after, staged)
			}
			if n := in2.metric(t, "blobref_ingest_staged_total", `outcome="staged"`); n != 0 {
				t.Errorf("restarted ingest staged %v bodies, want 0", n)
			}
			if n := p.requestEvents(id); n != 1 {
				t.Errorf("request events of %s: got %d, want 1", id, n)
			}
			if n := p.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE id = $1 AND publish_count = 1`, id); n != 1 {
				t.Errorf("ingest_uploads: got %d rows of %s published once, want 1", n, id)
			}
			p.checkInvariants([]upload{u})
			checkEffects(t, bw, rw, 1)
			if d := testenv.DeadLetters(t, p.js); len(d) != 0 {
				t.Errorf("dead letters: got %v, want none", d)
			}
		})
	}
}

// blobwriter down: ingest accepts (202) and the upload stays pending; with
// blobwriter back it completes, and a retry answers 200 with the reference.
func TestIngestWithConsumerDown(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	bw := p.start("blobwriter")
	rw := p.start("refwriter")
	in := p.startIngest("")
	bw.Stop(t)

	u := newUpload("waiting", 4096)
	key := "waiting-key"
	r := in.post(t, u, key)
	st := r.state(t, http.StatusAccepted)
	if st.State != "pending" || st.Steps.Accepted == nil || st.Reference != nil {
		t.Errorf("POST with blobwriter down: got %+v, want pending and accepted", st)
	}
	location := r.header.Get("Location")
	if st = in.get(t, location).state(t, http.StatusOK); st.State != "pending" {
		t.Errorf("GET %s with blobwriter down: got state %q, want pending", location, st.State)
	}
	// A wait that runs out answers 202 with the state as it is.
	r = in.post(t, u, key, "Prefer", "wait=1")
	if st = r.state(t, http.StatusAccepted); st.State != "pending" || r.header.Get("Preference-Applied") != "wait=1" {
		t.Errorf("retry with Prefer: wait=1: got %+v, Preference-Applied %q; want pending, wait=1", st, r.header.Get("Preference-Applied"))
	}

	bw2 := p.start("blobwriter")
	if got := p.awaitCompleted(1, time.Minute); got[st.ID] != 1 {
		t.Fatalf("completed: got %v, want %s once", got, st.ID)
	}
	in.awaitState(t, location, "completed")
	r = in.post(t, u, key)
	u = r.state(t, http.StatusOK).checkCompleted(t, r, u)

	p.checkInvariants([]upload{u})
	checkEffects(t, bw2, rw, 1)
	if n := p.requestEvents(u.ID); n != 1 {
		t.Errorf("request events of %s: got %d, want 1 (no re-drive inside REDRIVE_AFTER)", u.ID, n)
	}
}

// JetStream down: ingest answers 503 with Retry-After as a problem; once
// JetStream is back, the client's retry finishes the upload, published
// once.
func TestIngestJetStreamDown(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	bw := p.start("blobwriter")
	rw := p.start("refwriter")
	in := p.startIngest("")

	u := newUpload("outage", 4096)
	key := "outage-key"
	p.nats.Shutdown()
	r := in.post(t, u, key)
	r.problem(t, http.StatusServiceUnavailable, "unavailable")
	if ra := r.header.Get("Retry-After"); ra == "" {
		t.Error("503 without Retry-After")
	}
	if strings.Contains(strings.ToLower(string(r.body)), "nats") {
		t.Errorf("503 body %s: want no dependency error text", r.body)
	}

	p.nats.Restart()
	// The upload was recorded before its publish failed: the retry resumes
	// it (200, not 201).
	r = in.retryPost(t, u, key, "Prefer", "wait=30")
	u = r.state(t, http.StatusOK).checkCompleted(t, r, u)

	p.checkInvariants([]upload{u})
	checkEffects(t, bw, rw, 1)
	// The publish that failed may have left from the reconnect buffer once
	// NATS was back; with the upload id as Nats-Msg-Id JetStream kept one.
	if n := p.requestEvents(u.ID); n != 1 {
		t.Errorf("request events of %s: got %d, want 1", u.ID, n)
	}
	if d := testenv.DeadLetters(t, p.js); len(d) != 0 {
		t.Errorf("dead letters: got %v, want none", d)
	}
}

// ingestID is the upload id ingest gives key sent with ingestToken, as the
// README documents it: the first 32 hex characters of
// sha256(caller "\n" key).
func ingestID(key string) string {
	sum := sha256.Sum256([]byte(ingestCaller + "\n" + key))
	return hex.EncodeToString(sum[:])[:32]
}

// checkEffects checks that blobwriter bw and refwriter rw each ran n side
// effects.
func checkEffects(t *testing.T, bw, rw *proc, n int) {
	t.Helper()
	if got := bw.metric(t, "blobref_step_effects_total", `step="blob"`); got != float64(n) {
		t.Errorf("blob writes: got %v, want %d", got, n)
	}
	if got := rw.metric(t, "blobref_step_effects_total", `step="ref"`); got != float64(n) {
		t.Errorf("reference writes: got %v, want %d", got, n)
	}
}

// reply is an answer of ingest.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// uploadState is the JSON state ingest answers with (its public API).
type uploadState struct {
	ID        string    `json:"id"`
	Subject   string    `json:"subject"`
	State     string    `json:"state"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"createdAt"`
	Steps     struct {
		Accepted, Blob, Ref *struct {
			At time.Time `json:"at"`
		}
	} `json:"steps"`
	Reference *events.Reference `json:"reference"`
}

// tryPost sends u's bytes as POST /v1/uploads?subject=<u.Subject> with
// Idempotency-Key key and the extra headers (name, value, ...). An error
// is a transport error: the connection broke.
func (pr *proc) tryPost(u upload, key string, header ...string) (reply, error) {
	target := "http://" + pr.httpAddr + "/v1/uploads?subject=" + url.QueryEscape(u.Subject)
	req, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(u.Data))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Authorization", "Bearer "+ingestToken)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/octet-stream")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(req)
}

// post is tryPost for a request that must be answered.
func (pr *proc) post(t *testing.T, u upload, key string, header ...string) reply {
	t.Helper()
	r, err := pr.tryPost(u, key, header...)
	if err != nil {
		t.Fatalf("POST %s: %v", key, err)
	}
	return r
}

// retryPost retries the POST as a client should: after a broken
// connection, a 409 or a 503, honouring Retry-After, for up to a minute.
func (pr *proc) retryPost(t *testing.T, u upload, key string, header ...string) reply {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r, err := pr.tryPost(u, key, header...)
		if err == nil && r.status != http.StatusConflict && r.status != http.StatusServiceUnavailable {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("POST %s: still %d %s (%v) after a minute of retries", key, r.status, r.body, err)
		}
		wait := 100 * time.Millisecond
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err == nil {
			wait = time.Duration(s) * time.Second
		}
		time.Sleep(wait)
	}
}

// get sends GET path (e.g. a Location) to ingest.
func (pr *proc) get(t *testing.T, path string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+pr.httpAddr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+ingestToken)
	r, err := do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return r
}

// awaitState polls GET path until the upload is in state want.
func (pr *proc) awaitState(t *testing.T, path, want string) uploadState {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st := pr.get(t, path).state(t, http.StatusOK)
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: state %q after 2m, want %q", path, st.State, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func do(req *http.Request) (reply, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// state checks that r has status and a JSON state, and returns it.
func (r reply) state(t *testing.T, status int) uploadState {
	t.Helper()
	if r.status != status {
		t.Fatalf("status: got %d (%s), want %d", r.status, r.body, status)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type: got %q, want application/json", ct)
	}
	var st uploadState
	if err := json.Unmarshal(r.body, &st); err != nil {
		t.Fatalf("state %s: %v", r.body, err)
	}
	return st
}

// problem checks that r is an application/problem+json of status and type
// slug.
func (r reply) problem(t *testing.T, status int, slug string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status: got %d (%s), want %d", r.status, r.body, status)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type: got %q, want application/problem+json", ct)
	}
	var p struct {
		Type, Title, Detail string
		Status              int
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem %s: %v", r.body, err)
	}
	if p.Status != status || p.Type != "urn:problem-type:blobref:"+slug || p.Title == "" || p.Detail == "" {
		t.Errorf("problem: got %s, want status %d, type urn:problem-type:blobref:%s, a title and a detail", r.body, status, slug)
	}
}

// checkCompleted checks that st is u completed: its reference names u's
// subject, bytes and key uploads/<id>, and the Location of r, the answer
// to u's POST, is the upload's. It returns u with the id and event time ingest
// gave it, for checkInvariants.
func (st uploadState) checkCompleted(t *testing.T, r reply, u upload) upload {
	t.Helper()
	u.ID, u.Time = st.ID, st.CreatedAt
	if loc, want := r.header.Get("Location"), "/v1/uploads/"+st.ID; loc != want {
		t.Errorf("Location: got %q, want %q", loc, want)
	}
	if st.State != "completed" || st.Steps.Accepted == nil || st.Steps.Blob == nil || st.Steps.Ref == nil {
		t.Fatalf("upload %s: got state %q, steps %+v; want completed with every step", st.ID, st.State, st.Steps)
	}
	want := events.Reference{
		ID: st.ID, Subject: u.Subject, EventTime: st.CreatedAt,
		Blob: events.Blob{Key: "uploads/" + st.ID, Size: int64(len(u.Data)), SHA256: u.sha(), ContentType: "application/octet-stream"},
	}
	if ref := st.Reference; ref == nil || ref.ID != want.ID || ref.Subject != want.Subject || ref.Blob != want.Blob || !ref.EventTime.Equal(want.EventTime) {
		t.Errorf("reference of %s: got %+v, want %+v", st.ID, ref, want)
	}
	return u
}

// stagedObject is what the staging bucket holds for an upload: a rewrite
// gives the object a new NUID and adds messages to the bucket's stream.
type stagedObject struct {
	found   bool
	objects int    // objects in the bucket
	nuid    string // of this upload's object
	size    uint64
	msgs    uint64 // messages in the bucket's stream
	lastSeq uint64
}

func (p *pipeline) staging(id string) stagedObject {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := p.js.ObjectStore(ctx, stagingBucket)
	if err != nil {
		p.t.Fatalf("staging bucket: %v", err)
	}
	var s stagedObject
	list, err := store.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		p.t.Fatalf("staging bucket: %v", err)
	}
	s.objects = len(list)
	if i := slices.IndexFunc(list, func(o *jetstream.ObjectInfo) bool { return o.Name == id }); i >= 0 {
		s.found, s.nuid, s.size = true, list[i].NUID, list[i].Size
	}
	stream, err := p.js.Stream(ctx, "OBJ_"+stagingBucket)
	if err != nil {
		p.t.Fatalf("staging bucket: %v", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		p.t.Fatalf("staging bucket: %v", err)
	}
	s.msgs, s.lastSeq = info.State.Msgs, info.State.LastSeq
	return s
}

// requestEvents is the number of request events of upload id in UPLOADS.
func (p *pipeline) requestEvents(id string) int {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := p.js.Stream(ctx, events.StreamName)
	if err != nil {
		p.t.Fatal(err)
	}
	subject := events.RequestedSubject(id)
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		p.t.Fatal(err)
	}
	return int(info.State.Subjects[subject])
}

// requestEvent returns the latest request event of upload id in UPLOADS.
func (p *pipeline) requestEvent(id string) *events.Event {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := p.js.Stream(ctx, events.StreamName)
	if err != nil {
		p.t.Fatal(err)
	}
	raw, err := stream.GetLastMsgForSubject(ctx, events.RequestedSubject(id))
	if err != nil {
		p.t.Fatalf("request event of %s: %v", id, err)
	}
	ev, err := events.Decode(raw.Subject, raw.Header, raw.Data)
	if err != nil {
		p.t.Fatalf("request event of %s: %v", id, err)
	}
	return ev
}
