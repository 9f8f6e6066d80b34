package webhook

import (
	"strings"
	"testing"
	"time"
)

// The signature of a known message, computed apart from this package (with
// Python's hmac module): HMAC-SHA256 under the secret's bytes of
// "id.timestamp.body", base64, after "v1,".
func TestSignKnownVector(t *testing.T) {
	t.Parallel()
	s, err := ParseSecret("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	if err != nil {
		t.Fatal(err)
	}
	got := s.Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if want := "v1,O4Gjv1HqPqsMrjmczoggs/sWA8gZD0VyHG+fLh4+ktI="; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if s.String() != "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" {
		t.Errorf("String: got %s", s)
	}
}

// During a rotation every secret signs: the header lists the signatures,
// space-separated, the current secret's first.
func TestSignatureRotation(t *testing.T) {
	t.Parallel()
	a, _ := ParseSecret("whsec_" + strings.Repeat("A", 32))
	b, _ := ParseSecret("whsec_" + strings.Repeat("B", 32))
	ts := time.Unix(1700000000, 0)
	got := Signature([]Secret{a, b}, "msg_x", ts, []byte("{}"))
	if want := a.Sign("msg_x", ts, []byte("{}")) + " " + b.Sign("msg_x", ts, []byte("{}")); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseSecretRefuses(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=": `starts with "whsec_"`,
		"whsec_not base64!":                            "base64",
		"whsec_AAECAwQFBgcICQoLDA0ODxAR":               "24 to 64 bytes, not 18",
		"whsec_" + strings.Repeat("A", 100):            "24 to 64 bytes, not 75",
	} {
		if _, err := ParseSecret(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSecret(%q): got %v, want an error with %q", in, err, want)
		}
	}
}

// A webhook-id is stable per (upload, endpoint), different across either,
// and holds no dot.
func TestMessageID(t *testing.T) {
	t.Parallel()
	id := MessageID("u1", "ep1")
	if id != MessageID("u1", "ep1") {
		t.Error("MessageID is not stable")
	}
	seen := map[string]bool{}
	for _, pair := range [][2]string{{"u1", "ep1"}, {"u1", "ep2"}, {"u2", "ep1"}, {"u1e", "p1"}} {
		got := MessageID(pair[0], pair[1])
		if seen[got] {
			t.Errorf("MessageID%v: %s given twice", pair, got)
		}
		seen[got] = true
		if !strings.HasPrefix(got, "msg_") || strings.Contains(got, ".") {
			t.Errorf("MessageID%v: %s, want msg_ and no dot", pair, got)
		}
	}
}
