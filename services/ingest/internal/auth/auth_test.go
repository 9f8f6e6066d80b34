package auth_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/blobref/blobref/services/ingest/internal/auth"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLoad(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "tokens")
	err := os.WriteFile(file, []byte("# tokens\n\nfile-token carol read\nfile-token-2 dave upload,read\nfile-token-3 erin\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.Load("s3cr3t=alice:upload,read, abc+/==bob:read,plain=frank", file)
	if err != nil {
		t.Fatal(err)
	}
	if tokens.Len() != 6 {
		t.Errorf("Len: got %d, want 6", tokens.Len())
	}
	for token, want := range map[string]auth.Caller{
		"s3cr3t":       {Name: "alice", Scopes: []string{"upload", "read"}},
		"abc+/=":       {Name: "bob", Scopes: []string{"read"}},
		"plain":        {Name: "frank", Scopes: []string{"upload", "read"}},
		"file-token":   {Name: "carol", Scopes: []string{"read"}},
		"file-token-2": {Name: "dave", Scopes: []string{"upload", "read"}},
		"file-token-3": {Name: "erin", Scopes: []string{"upload", "read"}},
	} {
		got, ok := tokens.Authenticate(token)
		if !ok || got.Name != want.Name || !slices.Equal(got.Scopes, want.Scopes) {
			t.Errorf("Authenticate(%q): got %+v %v, want %+v", token, got, ok, want)
		}
	}
	if _, ok := tokens.Authenticate("s3cr3"); ok {
		t.Error("a prefix of a token authenticates")
	}
	if c, _ := tokens.Authenticate("abc+/="); c.Can(auth.ScopeUpload) || !c.Can(auth.ScopeRead) {
		t.Errorf("scopes of bob: got %v, want read only", c.Scopes)
	}
}

func TestLoadRejects(t *testing.T) {
	t.Parallel()
	// SECRETX is the token: no error may repeat it.
	for name, tc := range map[string]struct{ list, file, want string }{
		"no caller":       {list: "SECRETX=", want: "caller"},
		"bad caller":      {list: "SECRETX=al ice", want: "caller"},
		"bad scope":       {list: "SECRETX=alice:write", want: `scope "write"`},
		"bad token":       {list: "SECRETX !=alice", want: "bearer token"},
		"scope first":     {list: "read", want: "token=caller"},
		"twice":           {list: "SECRETX=alice,SECRETX=bob", want: "twice"},
		"bad file line":   {file: "SECRETX\n", want: ":1:"},
		"bad file scope":  {file: "SECRETX alice admin\n", want: `scope "admin"`},
		"missing file":    {file: "-", want: "AUTH_TOKENS_FILE"},
		"twice over both": {list: "SECRETX=alice", file: "SECRETX bob\n", want: "twice"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
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
			_, err := auth.Load(tc.list, path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: got %v, want an error mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "SECRETX") {
				t.Errorf("Load: the error %q repeats the token", err)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	for header, want := range map[string]string{
		"Bearer abc":   "abc",
		"bearer  abc ": "abc",
		"Basic abc":    "",
		"Bearer":       "",
		"Bearer ":      "",
		"abc":          "",
	} {
		got, ok := auth.BearerToken(header)
		if got != want || ok != (want != "") {
			t.Errorf("BearerToken(%q): got %q %v, want %q", header, got, ok, want)
		}
	}
}
