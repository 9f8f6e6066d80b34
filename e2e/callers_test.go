package e2e

// Many callers of one ingest, against the real binaries: each caller's
// current reference of a subject is its own, a token's subject prefixes are
// enforced, input that breaks the event contract is refused before anything
// is recorded, and a failed upload's state never shows a dependency's error.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// caller is a token ingest serves and the caller it stands for.
type caller struct{ name, token string }

// The callers of the tests of many callers: tokens strong enough for ingest.
var (
	alice   = caller{"alice", "aliceQ7vX9pL2mN8rT4wY6bC1dF5gH7jK0s"}
	mallory = caller{"mallory", "malloryQ7vX9pL2mN8rT4wY6bC1dF5gH7jK"}
	carol   = caller{"carol", "carolQ7vX9pL2mN8rT4wY6bC1dF5gH7jK0s"}
)

// tokensOf is an AUTH_TOKENS setting that serves callers with every scope
// and every subject, carol under users/7/ only, and the harness's own token.
func tokensOf(callers ...caller) string {
	entries := []string{ingestToken + "=" + ingestCaller}
	for _, c := range callers {
		e := c.token + "=" + c.name
		if c == carol {
			e += "::users/7/"
		}
		entries = append(entries, e)
	}
	return "AUTH_TOKENS=" + strings.Join(entries, ",")
}

// idOf is the upload id ingest gives key sent by c, as the README
// documents it.
func idOf(c caller, key string) string {
	sum := sha256.Sum256([]byte(c.name + "\n" + key))
	return hex.EncodeToString(sum[:])[:32]
}

// send sends a request of c to ingest; an error is a transport error.
func (pr *proc) send(c caller, method, path string, body io.Reader, header ...string) (reply, error) {
	req, err := http.NewRequest(method, "http://"+pr.httpAddr+path, body)
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(req)
}

// upload POSTs data to subject as c with key, waiting for completion.
func (pr *proc) upload(t *testing.T, c caller, subject, key string, data []byte, header ...string) reply {
	t.Helper()
	r, err := pr.send(c, http.MethodPost, "/v1/uploads?subject="+url.QueryEscape(subject), bytes.NewReader(data),
		append([]string{"Idempotency-Key", key, "Content-Type", "application/octet-stream"}, header...)...)
	if err != nil {
		t.Fatalf("POST %s as %s: %v", key, c.name, err)
	}
	return r
}

// currentReference is c's GET /v1/references?subject=subject.
func (pr *proc) currentReference(t *testing.T, c caller, subject string) reply {
	t.Helper()
	r, err := pr.send(c, http.MethodGet, "/v1/references?subject="+url.QueryEscape(subject), nil)
	if err != nil {
		t.Fatalf("GET the reference of %s as %s: %v", subject, c.name, err)
	}
	return r
}

func (r reply) reference(t *testing.T) events.Reference {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status: got %d (%s), want 200", r.status, r.body)
	}
	var ref events.Reference
	if err := json.Unmarshal(r.body, &ref); err != nil {
		t.Fatalf("reference %s: %v", r.body, err)
	}
	return ref
}

// Two callers upload to one subject through HTTP: the second's newer upload
// (the takeover attempt) leaves the first's current reference as it was,
// and each sees its own through GET /v1/references.
func TestIngestCallersOwnTheirReferences(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	p.start("blobwriter")
	p.start("refwriter")
	in := p.startIngest("", tokensOf(alice, mallory))
	const subject = "users/42/avatar"

	in.currentReference(t, alice, subject).problem(t, http.StatusNotFound, "not-found")
	aliceUp := newUpload("alice-avatar", 4096)
	aliceUp.Subject = subject
	r := in.upload(t, alice, subject, "avatar-1", aliceUp.Data, "Prefer", "wait=30")
	aliceUp = r.state(t, http.StatusCreated).checkCompleted(t, r, aliceUp)
	aliceRef := in.currentReference(t, alice, subject).reference(t)
	if aliceRef.ID != aliceUp.ID || aliceRef.Owner != alice.name || aliceRef.Subject != subject || aliceRef.Blob.SHA256 != aliceUp.sha() {
		t.Fatalf("alice's current reference: got %+v, want her upload %s", aliceRef, aliceUp.ID)
	}
	rows := p.rowVersions()

	// mallory's upload to the same subject, later.
	malloryUp := newUpload("mallory-avatar", 4096)
	malloryUp.Subject = subject
	r = in.upload(t, mallory, subject, "avatar-1", malloryUp.Data, "Prefer", "wait=30")
	malloryUp = r.state(t, http.StatusCreated).checkCompleted(t, r, malloryUp)

	if got := in.currentReference(t, alice, subject).reference(t); got != aliceRef {
		t.Errorf("alice's current reference after mallory's upload: got %+v, want %+v as it was", got, aliceRef)
	}
	if got := in.currentReference(t, mallory, subject).reference(t); got.ID != malloryUp.ID || got.Owner != mallory.name {
		t.Errorf("mallory's current reference: got %+v, want his own upload %s", got, malloryUp.ID)
	}
	if v := p.rowVersions()[aliceUp.ID]; v != rows[aliceUp.ID] {
		t.Errorf("alice's reference row was rewritten (xmin %s, was %s)", v, rows[aliceUp.ID])
	}
	current := p.pg.Map(t, `SELECT owner, upload_id FROM subject_refs WHERE subject = $1`, subject)
	if want := map[string]string{alice.name: aliceUp.ID, mallory.name: malloryUp.ID}; !maps.Equal(current, want) {
		t.Errorf("subject_refs of %s: got %v, want %v", subject, current, want)
	}
	// A caller that never uploaded to the subject sees nothing of the others'.
	in.currentReference(t, caller{ingestCaller, ingestToken}, subject).problem(t, http.StatusNotFound, "not-found")
	p.checkInvariants([]upload{aliceUp, malloryUp})
}

// A token with subject prefixes gets 403, naming its prefixes, for any
// other subject; nothing is recorded or published.
func TestIngestSubjectOutsideThePrefixesIs403(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	in := p.startIngest("", tokensOf(carol))
	r := in.upload(t, carol, "users/42/avatar", "outside", []byte("not mine"))
	r.problem(t, http.StatusForbidden, "subject-forbidden")
	var prob struct {
		Detail   string
		Prefixes []string
	}
	if err := json.Unmarshal(r.body, &prob); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(prob.Detail, "users/7/") || !slices.Equal(prob.Prefixes, []string{"users/7/"}) || strings.Contains(string(r.body), carol.token) {
		t.Errorf("403: got %s, want the prefix users/7/ named and no token", r.body)
	}
	in.currentReference(t, carol, "users/42/avatar").problem(t, http.StatusForbidden, "subject-forbidden")
	if n := p.pg.Count(t, `SELECT count(*) FROM ingest_uploads`); n != 0 {
		t.Errorf("records: got %d, want 0", n)
	}
	if n := p.requestEvents(idOf(carol, "outside")); n != 0 {
		t.Errorf("request events: got %d, want 0", n)
	}
	in.upload(t, carol, "users/7/avatar", "inside", []byte("mine")).state(t, http.StatusAccepted)
}

// A 5,000-byte Content-Type, or a subject the event contract refuses, is
// answered at once; nothing is recorded, staged or published, and the key
// stays free for a good request.
func TestIngestRefusesBadInputBeforeRecording(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	p.start("blobwriter")
	p.start("refwriter")
	in := p.startIngest("")
	u := newUpload("bad-input", 2<<20) // large: it would be staged
	longType := "application/octet-stream; x=" + strings.Repeat("a", 5000)
	for name, header := range map[string][]string{
		"5000-byte Content-Type": {"Content-Type", longType},
	} {
		r, err := in.send(caller{ingestCaller, ingestToken}, http.MethodPost, "/v1/uploads?subject=users/1/avatar", bytes.NewReader(u.Data),
			append([]string{"Idempotency-Key", "bad-input"}, header...)...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r.problem(t, http.StatusUnsupportedMediaType, "unsupported-media-type")
		if !strings.Contains(string(r.body), "256") || len(r.body) > 2000 {
			t.Errorf("%s: got %s, want the 256-byte limit named and the value not repeated", name, r.body)
		}
	}
	for _, subject := range []string{"users/1/../2/avatar", "users/1\u200b/avatar", strings.Repeat("s", 1025)} {
		u.Subject = subject
		in.post(t, u, "bad-input").problem(t, http.StatusBadRequest, "invalid-request")
	}
	id := ingestID("bad-input")
	if n := p.pg.Count(t, `SELECT count(*) FROM ingest_uploads`) + p.pg.Count(t, `SELECT count(*) FROM ingest_leases`); n != 0 {
		t.Errorf("records and leases: got %d, want 0", n)
	}
	if n := p.requestEvents(id); n != 0 {
		t.Errorf("request events: got %d, want 0", n)
	}
	if s, err := p.js.ObjectStore(context.Background(), stagingBucket); err == nil {
		if _, err := s.GetInfo(context.Background(), id); err == nil {
			t.Errorf("staged object %s: want none", id)
		}
	}
	// The same key with good input uploads.
	u.Subject = "users/1/avatar"
	r := in.post(t, u, "bad-input", "Prefer", "wait=30")
	r.state(t, http.StatusCreated).checkCompleted(t, r, u)
}

// An upload whose staged bytes vanish ends as a claim_missing dead letter:
// its state says failed with the reason, the step and what the reason
// means, never the step's own error text.
func TestIngestFailedStateHidesTheError(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	in := p.startIngest("")
	u := newUpload("vanished", 2<<20)
	r := in.post(t, u, "vanished-key")
	st := r.state(t, http.StatusAccepted)
	store, err := p.js.ObjectStore(context.Background(), stagingBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(context.Background(), st.ID); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatal(err)
	}
	p.start("blobwriter")
	d, _ := testenv.AwaitDeadLetter(t, p.js, events.RequestedSubject(st.ID), time.Minute)
	if d.Reason != events.ReasonClaimMissing || d.Error == "" {
		t.Fatalf("dead letter: got %+v, want %s with the step's error", d, events.ReasonClaimMissing)
	}

	// ingest's read model hears of the dead letter from its own consumer.
	in.awaitState(t, r.header.Get("Location"), "failed")
	got := in.get(t, r.header.Get("Location"))
	var failed struct {
		State      string
		DeadLetter map[string]any `json:"deadLetter"`
	}
	if err := json.Unmarshal(got.body, &failed); err != nil || got.status != http.StatusOK {
		t.Fatalf("GET: got %d %s (%v)", got.status, got.body, err)
	}
	if failed.State != "failed" || failed.DeadLetter["reason"] != events.ReasonClaimMissing || failed.DeadLetter["step"] == "" ||
		failed.DeadLetter["message"] == "" {
		t.Errorf("GET: got %s, want failed with reason, step and message", got.body)
	}
	if _, ok := failed.DeadLetter["error"]; ok || strings.Contains(string(got.body), d.Error) {
		t.Errorf("GET: got %s, want no trace of the step's error %q", got.body, d.Error)
	}
}
