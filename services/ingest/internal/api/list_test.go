package api_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// list GETs /v1/uploads with query as the caller of token and returns the
// page.
func (e *env) list(t *testing.T, token string, query url.Values) (uploads.Page, reply) {
	t.Helper()
	r := e.get(token, "/v1/uploads?"+query.Encode())
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/uploads?%s: got %d (%s), want 200", query.Encode(), r.status, r.body)
	}
	var p uploads.Page
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("page %s: %v", r.body, err)
	}
	return p, r
}

func ids(sts []uploads.State) []string {
	out := make([]string, len(sts))
	for i, st := range sts {
		out[i] = st.ID
	}
	return out
}

// listEnv is a caller's uploads: alice's seven through ingest (four
// avatars, three banners, the first two completed) and one published over
// NATS and stored, older than them all; bob's two.
type listEnv struct {
	*env
	// newest is alice's uploads, newest first.
	newest            []string
	banners, finished []string
	direct            string
	bobs              []string
}

func newListEnv(t *testing.T) *listEnv {
	t.Helper()
	e := &listEnv{env: setup(t)}
	direct := natsRequest(t, "direct", "alice", "users/42/avatar")
	testenv.Publish(t, e.js, direct, direct.ID)
	e.storeBlob(direct)
	e.direct = direct.ID
	// ingest's clock runs ahead of Postgres's from here: alice's uploads
	// through ingest are newer than the one published over NATS.
	e.clock.Advance(time.Hour)
	var oldest []string
	for i := range 7 {
		subject := "users/42/avatar"
		if i%2 == 1 {
			subject = "users/42/banner"
		}
		key := fmt.Sprintf("list-%d", i)
		e.post(upload{key: key, subject: subject, body: []byte("upload " + key)}).state(t, http.StatusAccepted)
		id := uploads.ID("alice", key)
		oldest = append(oldest, id)
		if subject == "users/42/banner" {
			e.banners = append([]string{id}, e.banners...)
		}
		if i < 2 {
			e.complete(e.awaitRequests(id, 1)[0])
			e.finished = append([]string{id}, e.finished...)
		}
		e.clock.Advance(time.Second)
	}
	oldest = append([]string{direct.ID}, oldest...)
	for i := len(oldest) - 1; i >= 0; i-- {
		e.newest = append(e.newest, oldest[i])
	}
	for _, key := range []string{"bob-1", "bob-2"} {
		e.post(upload{token: bobToken, key: key, body: []byte(key)}).state(t, http.StatusAccepted)
		e.bobs = append(e.bobs, uploads.ID("bob", key))
		e.clock.Advance(time.Second)
	}
	return e
}

// A walk through the pages with a small limit sees each upload once, newest
// first, while new uploads arrive; the next page is also in a Link header.
func TestListWalksEveryUploadOnce(t *testing.T) {
	t.Parallel()
	e := newListEnv(t)
	all, _ := e.list(t, aliceToken, nil)
	if got := ids(all.Uploads); !slices.Equal(got, e.newest) || all.Next != "" {
		t.Fatalf("one page: got %v (next %q), want %v and no next", got, all.Next, e.newest)
	}
	var walked []string
	var arrived string
	q := url.Values{"limit": {"3"}}
	for page := 0; ; page++ {
		p, r := e.list(t, aliceToken, q)
		if len(p.Uploads) > 3 {
			t.Fatalf("page %d: %d uploads, want at most 3", page, len(p.Uploads))
		}
		walked = append(walked, ids(p.Uploads)...)
		if p.Next == "" {
			if link := r.header.Get("Link"); link != "" {
				t.Errorf("last page: Link %q, want none", link)
			}
			break
		}
		want := fmt.Sprintf(`</v1/uploads?cursor=%s&limit=3>; rel="next"`, url.QueryEscape(p.Next))
		if link := r.header.Get("Link"); link != want {
			t.Errorf("page %d: Link %q, want %q", page, link, want)
		}
		// Uploads arriving between pages are newer than the cursor.
		key := fmt.Sprintf("arrived-%d", page)
		e.post(upload{key: key, body: []byte(key)}).state(t, http.StatusAccepted)
		arrived = uploads.ID("alice", key)
		e.clock.Advance(time.Second)
		q.Set("cursor", p.Next)
	}
	if !slices.Equal(walked, e.newest) {
		t.Errorf("walk: got %v, want %v (each once, newest first)", walked, e.newest)
	}
	// The ones that arrived meanwhile head the next walk.
	first, _ := e.list(t, aliceToken, url.Values{"limit": {"1"}})
	if len(first.Uploads) != 1 || arrived == "" || first.Uploads[0].ID != arrived {
		t.Errorf("newest after the walk: got %v, want the last upload that arrived", ids(first.Uploads))
	}
}

// The subject and state filters, alone and together, and with pages.
func TestListFilters(t *testing.T) {
	t.Parallel()
	e := newListEnv(t)
	keep := func(pred func(id string) bool) []string {
		var out []string
		for _, id := range e.newest {
			if pred(id) {
				out = append(out, id)
			}
		}
		return out
	}
	pending := keep(func(id string) bool { return !slices.Contains(e.finished, id) && id != e.direct })
	for _, c := range []struct {
		query url.Values
		want  []string
	}{
		{url.Values{"subject": {"users/42/banner"}}, e.banners},
		{url.Values{"state": {uploads.StateCompleted}}, e.finished},
		{url.Values{"state": {uploads.StateStored}}, []string{e.direct}},
		{url.Values{"state": {uploads.StatePending}}, pending},
		{url.Values{"state": {uploads.StateFailed}}, nil},
		{url.Values{"subject": {"users/42/banner"}, "state": {uploads.StateCompleted}}, keep(func(id string) bool {
			return slices.Contains(e.banners, id) && slices.Contains(e.finished, id)
		})},
		{url.Values{"subject": {"users/7/nothing"}}, nil},
	} {
		var got []string
		q := url.Values{"limit": {"2"}}
		for k, v := range c.query {
			q[k] = v
		}
		for {
			p, _ := e.list(t, aliceToken, q)
			for _, st := range p.Uploads {
				if s := c.query.Get("state"); s != "" && st.State != s {
					t.Errorf("%s: %s is %s", c.query.Encode(), st.ID, st.State)
				}
				if s := c.query.Get("subject"); s != "" && st.Subject != s {
					t.Errorf("%s: %s has subject %s", c.query.Encode(), st.ID, st.Subject)
				}
			}
			got = append(got, ids(p.Uploads)...)
			if p.Next == "" {
				break
			}
			q.Set("cursor", p.Next)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.query.Encode(), got, c.want)
		}
	}

	// A pending upload dead-lettered is failed, and pending no more; its
	// retry re-drives it and it is pending again.
	doomed := pending[0]
	req := e.awaitRequests(doomed, 1)[0]
	e.deadLetter(req, events.ReasonRetriesExhausted, events.StepBlob)
	failed, _ := e.list(t, aliceToken, url.Values{"state": {uploads.StateFailed}})
	if got := ids(failed.Uploads); !slices.Equal(got, []string{doomed}) || failed.Uploads[0].DeadLetter == nil {
		t.Errorf("failed: got %v, want [%s] with its dead letter", got, doomed)
	}
	stillPending, _ := e.list(t, aliceToken, url.Values{"state": {uploads.StatePending}})
	if got := ids(stillPending.Uploads); !slices.Equal(got, pending[1:]) {
		t.Errorf("pending after the dead letter: got %v, want %v", got, pending[1:])
	}
	e.clock.Advance(time.Hour) // past RedriveAfter
	key := ""
	for i := range 7 {
		if uploads.ID("alice", fmt.Sprintf("list-%d", i)) == doomed {
			key = fmt.Sprintf("list-%d", i)
		}
	}
	subject := "users/42/avatar"
	if slices.Contains(e.banners, doomed) {
		subject = "users/42/banner"
	}
	e.post(upload{key: key, subject: subject, body: []byte("upload " + key)}).state(t, http.StatusAccepted)
	redriven, _ := e.list(t, aliceToken, url.Values{"state": {uploads.StatePending}})
	if got := ids(redriven.Uploads); !slices.Equal(got, pending) {
		t.Errorf("pending after the re-drive: got %v, want %v", got, pending)
	}
}

// A caller lists its own uploads only; the listing needs the read scope.
func TestListShowsNoOtherOwnersUploads(t *testing.T) {
	t.Parallel()
	e := newListEnv(t)
	// bob's upload published over NATS, stored: older than his uploads
	// through ingest, whose clock runs ahead.
	bobs := natsRequest(t, "bobs", "bob", "users/42/avatar")
	testenv.Publish(t, e.js, bobs, bobs.ID)
	e.storeBlob(bobs)
	p, _ := e.list(t, bobToken, url.Values{"limit": {"200"}})
	if got, want := ids(p.Uploads), []string{e.bobs[1], e.bobs[0], bobs.ID}; !slices.Equal(got, want) {
		t.Errorf("bob's uploads: got %v, want %v", got, want)
	}
	p, _ = e.list(t, aliceToken, url.Values{"limit": {"200"}})
	for _, st := range p.Uploads {
		if slices.Contains(e.bobs, st.ID) || st.ID == bobs.ID {
			t.Errorf("alice's listing shows bob's upload %s", st.ID)
		}
	}
	if p, _ := e.list(t, readerToken, nil); len(p.Uploads) != 0 || p.Next != "" {
		t.Errorf("reader's uploads: got %v, want none", ids(p.Uploads))
	}
	e.get(uploaderToken, "/v1/uploads").problem(t, http.StatusForbidden, "forbidden", "read")
	e.get("-", "/v1/uploads").problem(t, http.StatusUnauthorized, "unauthorized")
}

// Bad parameters are problems that name them.
func TestListRefusesBadParameters(t *testing.T) {
	t.Parallel()
	e := setup(t)
	forged := "1." + base64.RawURLEncoding.EncodeToString([]byte("123.not*an*id"))
	for query, param := range map[string]string{
		"limit=0":                     "limit",
		"limit=201":                   "limit",
		"limit=ten":                   "limit",
		"limit=1&limit=2":             "limit",
		"state=done":                  "state",
		"subject=":                    "subject",
		"subject=a&subject=b":         "subject",
		"cursor=":                     "cursor",
		"cursor=garbage":              "cursor",
		"cursor=1.%21%21":             "cursor",
		"cursor=" + forged:            "cursor",
		"limit=-1&state=x&cursor=abc": "limit",
	} {
		p := e.get(aliceToken, "/v1/uploads?"+query).problem(t, http.StatusBadRequest, "invalid-request", param)
		found := false
		for _, ip := range p.InvalidParams {
			found = found || ip.Name == param
		}
		if !found {
			t.Errorf("%s: invalid-params %+v, want %s named", query, p.InvalidParams, param)
		}
	}
	// Every bad parameter is named at once.
	p := e.get(aliceToken, "/v1/uploads?limit=-1&state=x").problem(t, http.StatusBadRequest, "invalid-request")
	if len(p.InvalidParams) != 2 {
		t.Errorf("two bad parameters: got %+v, want both named", p.InvalidParams)
	}
}

// Uploads accepted at the same instant are ordered by id, and a page
// boundary between them loses none and repeats none.
func TestListPagesThroughTies(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var want []string
	for i := range 5 {
		key := fmt.Sprintf("tie-%d", i)
		e.post(upload{key: key, body: []byte(key)}).state(t, http.StatusAccepted) // the clock stands still
		want = append(want, uploads.ID("alice", key))
	}
	slices.Sort(want)
	slices.Reverse(want)
	var got []string
	q := url.Values{"limit": {"2"}}
	for {
		p, _ := e.list(t, aliceToken, q)
		got = append(got, ids(p.Uploads)...)
		if p.Next == "" {
			break
		}
		q.Set("cursor", p.Next)
	}
	if !slices.Equal(got, want) {
		t.Errorf("walk through ties: got %v, want %v", got, want)
	}
}
