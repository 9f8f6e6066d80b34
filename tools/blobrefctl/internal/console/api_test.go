package console_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/internal/uploadview"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/blobrefctl/internal/console"
)

const (
	readToken    = "readerQ7vX9pL2mN8rT4wY6bC1dF5gH7jK0sAb"
	operateToken = "operatorZq3vX9pL2mN8rT4wY6bC1dF5gH7jK0"
)

// server is the console's handler over a real JetStream and Postgres schema,
// with a reader's token and an operator's.
func server(t *testing.T) (*httptest.Server, *testenv.Postgres, *nats.Conn) {
	t.Helper()
	nc, js := testenv.StartNATS(t).Connect()
	pg := testenv.StartPostgres(t)
	pool, err := uploadview.OpenPool(context.Background(), pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	tokens, err := console.LoadTokens(readToken+"=reader:read,"+operateToken+"=ops:read,operate", "")
	if err != nil {
		t.Fatal(err)
	}
	srv := &console.Server{View: &uploadview.View{Pool: pool, JS: js}, JS: js, Tokens: tokens, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts, pg, nc
}

func call(t *testing.T, ts *httptest.Server, method, path, token string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &body)
	return resp.StatusCode, resp.Header, body
}

// The API wants a known token with the right scope, and says what is wrong
// as a problem; the pages load without one, under a strict CSP.
func TestAPIAuthAndProblems(t *testing.T) {
	t.Parallel()
	ts, _, nc := server(t)
	js, _ := nc.JetStream()
	ev, err := events.NewRequested(events.Request{ID: "abc", Source: "/test", Subject: "users/1", ContentType: "text/plain", Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := ev.Msg("abc")
	if _, err := js.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	dead := events.DeadLetterMsg(events.DeadLetter{Reason: events.ReasonClaimMissing, Step: "blob", Subject: msg.Subject, Deliveries: 1}, msg.Header, msg.Data, "")
	if _, err := js.PublishMsg(dead); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		method, path, token string
		status              int
		want                string // in the body or its problem's detail
	}{
		{"GET", "/api/me", "", 401, "send Authorization: Bearer"},
		{"GET", "/api/me", "wrong-token", 401, "none of the console's tokens"},
		{"GET", "/api/me", readToken, 200, `"name":"reader"`},
		{"GET", "/api/uploads?q=abc", readToken, 200, `"id":"abc"`},
		{"GET", "/api/uploads?q=", readToken, 400, "give an upload id"},
		{"GET", "/api/uploads?q=abc&limit=0", readToken, 400, "limit"},
		{"GET", "/api/uploads/abc", readToken, 200, `"state":"failed"`},
		{"GET", "/api/uploads/nobody", readToken, 404, "no such upload"},
		{"GET", "/api/consumers", readToken, 200, `"name":"blobwriter"`},
		{"GET", "/api/dead-letters?reason=claim_missing", readToken, 200, `"reason":"claim_missing"`},
		{"GET", "/api/dead-letters?subject=orders.x", readToken, 400, "not a subject of UPLOADS"},
		{"GET", "/api/nothing", readToken, 404, "not part of the console's API"},
		{"POST", "/api/dead-letters/1/redrive", readToken, 403, "lacks the operate scope"},
		{"POST", "/api/dead-letters/x/redrive", operateToken, 400, "not a sequence"},
		{"POST", "/api/dead-letters/9/redrive", operateToken, 404, "no dead letter at #9"},
		{"POST", "/api/dead-letters/1/redrive", operateToken, 200, `"newSeq":2`},
		{"POST", "/api/dead-letters/1/redrive", operateToken, 404, "no dead letter at #1"},
	} {
		status, h, body := call(t, ts, tc.method, tc.path, tc.token)
		raw, _ := json.Marshal(body)
		if status != tc.status || !strings.Contains(string(raw), tc.want) {
			t.Errorf("%s %s: got %d %s, want %d and %q", tc.method, tc.path, status, raw, tc.status, tc.want)
		}
		if status >= 400 && h.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: Content-Type %q, want application/problem+json", tc.method, tc.path, h.Get("Content-Type"))
		}
		if status == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s %s: WWW-Authenticate %q, want a Bearer challenge", tc.method, tc.path, h.Get("WWW-Authenticate"))
		}
	}

	for path, want := range map[string]string{"/": "<title>blobref console</title>", "/console.js": "async function api(", "/console.css": ".state-failed"} {
		resp, err := ts.Client().Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(raw), want) || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: %d, CSP %q; want 200, %q and a CSP", path, resp.StatusCode, resp.Header.Get("Content-Security-Policy"), want)
		}
	}
}

func TestLoadTokens(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "tokens")
	strong := "Zq3vX9pL2mN8rT4wY6bC1dF5gH7jK0sA"
	err := os.WriteFile(file, []byte("# operators\n\n"+strong+"1 carol read\n"+strong+"2 dave\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := console.LoadTokens(strong+"3=erin:operate,read, "+strong+"4=frank:read", file)
	if err != nil {
		t.Fatal(err)
	}
	for token, want := range map[string]string{
		strong + "1": "carol [read]", strong + "2": "dave [read operate]", strong + "3": "erin [operate read]", strong + "4": "frank [read]",
	} {
		o, ok := tokens.Authenticate(token)
		if got := o.Name + " " + strings.Join(strings.Fields("["+strings.Join(o.Scopes, " ")+"]"), " "); !ok || got != want {
			t.Errorf("Authenticate(…%s): got %q %v, want %q", token[len(token)-1:], got, ok, want)
		}
	}
	for name, tc := range map[string]struct{ list, file, want string }{
		"none":        {want: "no console tokens"},
		"short":       {list: "SECRETXshort=a", want: "shorter than 32"},
		"placeholder": {list: "CHANGE-ME-SECRETX-0123456789abcdefghij=a", want: "placeholder"},
		"bad scope":   {list: strong + "SECRETX=a:admin", want: "scope 1: not one of read, operate"},
		"bad name":    {list: strong + "SECRETX=a b", want: "the name"},
		"twice":       {list: strong + "SECRETX=a," + strong + "SECRETX=b", want: "twice"},
		"no name":     {list: "read", want: "token=name"},
		"file line":   {file: strong + "SECRETX\n", want: ":1: want"},
		"file gone":   {file: "-", want: "CONSOLE_TOKENS_FILE"},
	} {
		path := ""
		switch tc.file {
		case "":
		case "-":
			path = filepath.Join(t.TempDir(), "missing")
		default:
			path = filepath.Join(t.TempDir(), "tokens")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := console.LoadTokens(tc.list, path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, tc.want)
		} else if strings.Contains(err.Error(), "SECRETX") {
			t.Errorf("%s: the error %q repeats the token", name, err)
		}
	}
}
