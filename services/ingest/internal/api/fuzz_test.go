package api

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/blobref/blobref/pkg/events"
)

// The request parsers meet what a caller sends: make fuzz runs each target
// for FUZZTIME, and go test runs their seeds. Each checks that a parser
// never panics, that what it accepts obeys the documented rules (and the
// event contract the request event is checked against), that what it
// refuses is refused with an invalid-params or 415 problem, and that
// parsing what ingest would format gives the value back.

// acceptedByContract reports whether a request event with this subject and
// content type passes the event contract, and survives its wire encoding.
func acceptedByContract(t *testing.T, subject, contentType string) {
	t.Helper()
	data := []byte("x")
	sum := sha256.Sum256(data)
	ev, err := events.NewRequested(events.Request{
		ID: "fuzz", Source: "/blobref/ingest", Subject: subject, ContentType: contentType,
		Data: data, SHA256: hex.EncodeToString(sum[:]), Time: time.Unix(0, 0),
	})
	if err != nil {
		t.Fatalf("subject %q, content type %q: accepted by ingest, refused by the event contract: %v", clip(subject), clip(contentType), err)
	}
	m, err := ev.Msg(ev.ID)
	if err != nil {
		t.Fatalf("subject %q, content type %q: encode: %v", clip(subject), clip(contentType), err)
	}
	got, err := events.Decode(m.Subject, m.Header, m.Data)
	if err != nil {
		t.Fatalf("subject %q, content type %q: decode of the encoded event: %v", clip(subject), clip(contentType), err)
	}
	if got.Subject != subject || got.ContentType != contentType {
		t.Fatalf("wire round trip: got subject %q, content type %q; want %q, %q", got.Subject, got.ContentType, subject, contentType)
	}
}

// refusedParam fails unless err is a 400 naming param alone.
func refusedParam(t *testing.T, err error, param string) {
	t.Helper()
	var pe *paramError
	if !errors.As(err, &pe) || len(pe.params) != 1 || pe.params[0].Name != param || pe.params[0].Reason == "" {
		t.Fatalf("refusal: got %#v, want an invalid-params problem naming %s with a reason", err, param)
	}
}

func FuzzSubject(f *testing.F) {
	for _, s := range []string{
		"users/42/avatar", "a", "users/42 \"é\" 100% ☃", " padded", "padded ", "tab\there", "nl\n",
		"\x00", "\x7f", "\u0085", "\u200b", "\u202e", "\xff\xfe", "a/../b", "..", "%2e%2e", "users/%zz",
		strings.Repeat("s", 1024), strings.Repeat("s", 1025), strings.Repeat("é", 512), "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := checkSubject([]string{s})
		if err != nil {
			refusedParam(t, err, "subject")
			return
		}
		// The rules the event contract documents for a subject.
		switch {
		case got != s:
			t.Fatalf("accepted %q as %q: a subject is taken as sent", s, got)
		case s == "" || len(s) > 1024:
			t.Fatalf("accepted a subject of %d bytes, want 1 to 1024", len(s))
		case !utf8.ValidString(s):
			t.Fatalf("accepted %q: not UTF-8", s)
		case strings.ContainsFunc(s, unicode.IsControl):
			t.Fatalf("accepted %q: a control character", s)
		case strings.TrimSpace(s) != s:
			t.Fatalf("accepted %q: surrounding white space", s)
		}
		acceptedByContract(t, s, "application/octet-stream")
		// The subject travels as a query parameter: as a client encodes
		// it, it is read back the same.
		q, err := url.ParseQuery(url.Values{"subject": {s}}.Encode())
		if err != nil {
			t.Fatalf("query of %q: %v", s, err)
		}
		if again, err := checkSubject(q["subject"]); err != nil || again != s {
			t.Fatalf("through the query string: got %q, %v; want %q", again, err, s)
		}
	})
}

// quoteKey formats key as an RFC 8941 string, the form the Idempotency-Key
// draft defines.
func quoteKey(key string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(key) + `"`
}

func FuzzIdempotencyKey(f *testing.F) {
	for _, s := range []string{
		"avatar-1", " abc ", `"8e03978e-40d5-43e8"`, `"a\"b\\c"`, `"a b"`, `"`, `""`, `"a\b"`, `"a"b"`,
		`"\"`, `"abc`, `abc"`, "tab\there", "é", "\x7f", "", " ", quoteKey(strings.Repeat("k", 255)),
		strings.Repeat("k", 255), strings.Repeat("k", 256), `"` + strings.Repeat("k", 256) + `"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		key, err := parseKey([]string{v})
		if err != nil {
			refusedParam(t, err, "Idempotency-Key")
			return
		}
		// The documented rules: 1 to 255 printable ASCII characters.
		if key == "" || len(key) > maxKeyLen {
			t.Fatalf("parseKey(%q): accepted a key of %d characters, want 1 to %d", v, len(key), maxKeyLen)
		}
		for _, c := range []byte(key) {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("parseKey(%q): accepted %q, with the byte %#x, want printable ASCII", v, key, c)
			}
		}
		// Both spellings of the key, quoted and (where it can be) bare,
		// name the same upload.
		if again, err := parseKey([]string{quoteKey(key)}); err != nil || again != key {
			t.Fatalf("quoted %q: got %q, %v; want %q", quoteKey(key), again, err, key)
		}
		quoted := len(key) >= 2 && key[0] == '"' && key[len(key)-1] == '"'
		if strings.TrimSpace(key) == key && !quoted {
			if again, err := parseKey([]string{key}); err != nil || again != key {
				t.Fatalf("bare %q: got %q, %v; want the same key", key, again, err)
			}
		}
		// One key per upload.
		if _, err := parseKey([]string{v, v}); err == nil {
			t.Fatalf("parseKey(%q twice): accepted, want refused", v)
		}
	})
}

func FuzzPrefer(f *testing.F) {
	for _, s := range []string{
		"wait=10", "respond-async, wait=5", "return=minimal\nWait = 7", `wait="3"`, "wait=100",
		"wait=99999999999999999", "wait=999999999999999999999", "wait=0", "wait=-1", "wait=soon",
		"waiting=5", "wait=5;foo=bar", "wait", "wait=", ",,,", "wait=1, wait=2", "handling=lenient, wait=+4",
	} {
		f.Add(s, int64(30))
	}
	f.Add("wait=5", int64(0))
	f.Add("wait=5", int64(-1))
	f.Fuzz(func(t *testing.T, prefer string, maxSeconds int64) {
		// WAIT_MAX in whole seconds, as Preference-Applied states the wait
		// applied in whole seconds.
		maxWait := time.Duration(maxSeconds%(1<<32)) * time.Second
		values := strings.Split(prefer, "\n")
		wait, ok := parseWait(values, maxWait)
		if !ok {
			if wait != 0 {
				t.Fatalf("parseWait(%q, %v): not applied, yet a wait of %v", values, maxWait, wait)
			}
			return
		}
		if wait <= 0 || wait > maxWait || wait%time.Second != 0 {
			t.Fatalf("parseWait(%q, %v): %v, want whole seconds in (0, WAIT_MAX]", values, maxWait, wait)
		}
		// Preference-Applied, formatted as ingest does, is the wait applied.
		applied := "wait=" + strconv.Itoa(int(wait/time.Second))
		if again, ok := parseWait([]string{applied}, maxWait); !ok || again != wait {
			t.Fatalf("Preference-Applied %q: read back as %v, %v; want %v", applied, again, ok, wait)
		}
	})
}

func FuzzContentType(f *testing.F) {
	for _, s := range []string{
		"text/plain", "TEXT/Plain; charset=UTF-8", "image/png", "image/svg+xml", "application/pdf",
		`text/plain; charset="utf-8"; format=flowed`, "text/plain;", "text/plain; charset", "text/",
		"/plain", "text", "", " ", "text/html", "multipart/form-data; boundary=x", "text/plain; a=1; A=2",
		"text/plain; title*=UTF-8''%E2%98%83", "text/plain; x=\"é\"", "image/png\x00", "*/*",
		"text/plain; charset=" + strings.Repeat("x", 200),
	} {
		f.Add("image/*\ntext/plain\napplication/pdf", s)
	}
	f.Add("*/*", "application/x-anything; v=1")
	f.Add("text/*", "text/csv")
	f.Add("bad", "text/plain")
	f.Fuzz(func(t *testing.T, allow, value string) {
		m, err := ParseMediaTypes(strings.Split(allow, "\n"))
		if err != nil {
			return
		}
		// The documented forms of an entry: type/subtype, type/* or */*,
		// lower case; each allows what it names.
		for _, a := range m {
			typ, sub, _ := strings.Cut(a, "/")
			wildcard := a == "*/*" || (sub == "*" && !strings.Contains(typ, "*"))
			if a != strings.ToLower(a) || typ == "" || sub == "" || (!wildcard && strings.Contains(a, "*")) {
				t.Fatalf("ParseMediaTypes(%q): entry %q, want lower-case type/subtype, type/* or */*", allow, a)
			}
			if !m.Allows(strings.ReplaceAll(a, "*", "x")) {
				t.Fatalf("ParseMediaTypes(%q): %q is not allowed by its own entry", allow, a)
			}
		}
		ct, err := m.checkContentType(value)
		if err != nil {
			var me *mediaTypeError
			if !errors.As(err, &me) {
				t.Fatalf("checkContentType(%q): %#v, want a 415 problem", value, err)
			}
			return
		}
		// The documented rule: a media type on the allow-list, normalised.
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil {
			t.Fatalf("checkContentType(%q) = %q, which does not parse: %v", value, ct, err)
		}
		wantMT, wantParams, _ := mime.ParseMediaType(value)
		if mt != wantMT || !maps.Equal(params, wantParams) || !m.Allows(mt) {
			t.Fatalf("checkContentType(%q) = %q: %q %v, want %q %v, allowed", value, ct, mt, params, wantMT, wantParams)
		}
		if again, err := m.checkContentType(ct); err != nil || again != ct {
			t.Fatalf("checkContentType(%q) = %q, then %q, %v: want it unchanged", value, ct, again, err)
		}
		acceptedByContract(t, "users/42/avatar", ct)
	})
}
