package webhook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	secretA = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	secretB = "whsec_" + "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadEndpoints(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"endpoints.json": `{"endpoints": [
			{"id": "a-1", "owner": "alice", "url": "https://hooks.example.com/a", "secret_file": "a.secret"},
			{"id": "a-2", "owner": "alice", "url": "http://93.184.215.14/a", "secret_file": "rotating.secret"},
			{"id": "b", "owner": "bob", "url": "https://hooks.example.org/b", "secret_file": "a.secret"}]}`,
		"a.secret":        secretA + "\n",
		"rotating.secret": "# current, then the one being retired\n" + secretA + "\n\n" + secretB + "\n",
	})
	eps, err := LoadEndpoints(filepath.Join(dir, "endpoints.json"), false)
	if err != nil {
		t.Fatal(err)
	}
	if eps.Len() != 3 || len(eps.For("alice")) != 2 || len(eps.For("bob")) != 1 || len(eps.For("carol")) != 0 {
		t.Fatalf("got %d endpoints, alice %v, bob %v", eps.Len(), eps.For("alice"), eps.For("bob"))
	}
	a := eps.For("alice")
	if a[0].ID != "a-1" || a[1].ID != "a-2" || len(a[0].Secrets) != 1 || len(a[1].Secrets) != 2 || a[1].Secrets[1].String() != secretB {
		t.Errorf("alice: got %+v, want a-1 with one secret, a-2 with two in file order", a)
	}
}

// Every bad endpoint is named, and no secret shows in the error.
func TestLoadEndpointsRefuses(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"endpoints.json": `{"endpoints": [
			{"id": "bad id", "owner": "o", "url": "https://x.example", "secret_file": "ok.secret"},
			{"id": "dup", "owner": "o", "url": "https://x.example", "secret_file": "ok.secret"},
			{"id": "dup", "owner": "o", "url": "https://x.example", "secret_file": "ok.secret"},
			{"id": "noowner", "url": "https://x.example", "secret_file": "ok.secret"},
			{"id": "ftp", "owner": "o", "url": "ftp://x.example", "secret_file": "ok.secret"},
			{"id": "creds", "owner": "o", "url": "https://u:p@x.example", "secret_file": "ok.secret"},
			{"id": "loop", "owner": "o", "url": "http://127.0.0.1:8080/", "secret_file": "ok.secret"},
			{"id": "meta", "owner": "o", "url": "http://169.254.169.254/", "secret_file": "ok.secret"},
			{"id": "nosecret", "owner": "o", "url": "https://x.example"},
			{"id": "badsecret", "owner": "o", "url": "https://x.example", "secret_file": "bad.secret"},
			{"id": "missing", "owner": "o", "url": "https://x.example", "secret_file": "missing.secret"}]}`,
		"ok.secret":  secretA,
		"bad.secret": "whsec_c2hvcnQ=\n",
	})
	_, err := LoadEndpoints(filepath.Join(dir, "endpoints.json"), false)
	if err == nil {
		t.Fatal("got no error")
	}
	for _, want := range []string{
		`("bad id"): id: not 1 to 128`, `("dup"): id: given twice`, `("noowner"): owner: missing`,
		`("ftp"): url: scheme "ftp"`, `("creds"): url: credentials`, `("loop"): url: 127.0.0.1 is not a public address`,
		`("meta"): url: 169.254.169.254 is not a public address`, `("nosecret"): secret_file: missing`,
		`("badsecret"): secret_file: line 1: a secret is 24 to 64 bytes`, `("missing"): secret_file: open`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "c2hvcnQ") || strings.Contains(err.Error(), strings.TrimPrefix(secretA, "whsec_")) {
		t.Errorf("error shows a secret:\n%v", err)
	}

	// With private addresses allowed, a loopback URL is fine.
	dir = writeFiles(t, map[string]string{
		"endpoints.json": `{"endpoints": [{"id": "loop", "owner": "o", "url": "http://127.0.0.1:8080/", "secret_file": "ok.secret"}]}`,
		"ok.secret":      secretA,
	})
	if _, err := LoadEndpoints(filepath.Join(dir, "endpoints.json"), true); err != nil {
		t.Errorf("allowPrivate: got %v", err)
	}
	// An unknown field is a mistake, not something to ignore.
	dir = writeFiles(t, map[string]string{"endpoints.json": `{"endpoints": [{"id": "x", "secret": "whsec_..."}]}`})
	if _, err := LoadEndpoints(filepath.Join(dir, "endpoints.json"), false); err == nil || !strings.Contains(err.Error(), `unknown field "secret"`) {
		t.Errorf("unknown field: got %v", err)
	}
}
