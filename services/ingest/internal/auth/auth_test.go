package auth_test

import (
	"errors"
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
	err := os.WriteFile(file, []byte("# tokens\n\nfile-token carol read\nfile-token-2 dave upload,read\nfile-token-3 erin\n"+
		"file-token-4 gina * users/7/,teams/1/\nfile-token-5 hank upload urn:x/y\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.Load("s3cr3t=alice:upload,read:users/42/,teams/7/, abc+/==bob:read,plain=frank,"+
		"pre=ivan::users/9/,colon=judy:upload:tenant:1/", file)
	if err != nil {
		t.Fatal(err)
	}
	if tokens.Len() != 10 {
		t.Errorf("Len: got %d, want 10", tokens.Len())
	}
	both := []string{"upload", "read"}
	for token, want := range map[string]auth.Caller{
		"s3cr3t":       {Name: "alice", Scopes: both, Prefixes: []string{"users/42/", "teams/7/"}},
		"abc+/=":       {Name: "bob", Scopes: []string{"read"}},
		"plain":        {Name: "frank", Scopes: both},
		"pre":          {Name: "ivan", Scopes: both, Prefixes: []string{"users/9/"}},
		"colon":        {Name: "judy", Scopes: []string{"upload"}, Prefixes: []string{"tenant:1/"}},
		"file-token":   {Name: "carol", Scopes: []string{"read"}},
		"file-token-2": {Name: "dave", Scopes: both},
		"file-token-3": {Name: "erin", Scopes: both},
		"file-token-4": {Name: "gina", Scopes: both, Prefixes: []string{"users/7/", "teams/1/"}},
		"file-token-5": {Name: "hank", Scopes: []string{"upload"}, Prefixes: []string{"urn:x/y"}},
	} {
		got, ok := tokens.Authenticate(token)
		if !ok || got.Name != want.Name || !slices.Equal(got.Scopes, want.Scopes) || !slices.Equal(got.Prefixes, want.Prefixes) {
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
	// SECRETX is the token: no error may repeat it, nor any other value of
	// an entry, which a misplaced separator could make a token.
	for name, tc := range map[string]struct{ list, file, want string }{
		"no caller":          {list: "SECRETX=", want: "caller"},
		"bad caller":         {list: "SECRETX=al ice", want: "caller"},
		"bad scope":          {list: "SECRETX=alice:write", want: "scope 1: not one of upload, read"},
		"bad token":          {list: "SECRETX !=alice", want: "bearer token"},
		"scope first":        {list: "read", want: "token=caller"},
		"twice":              {list: "SECRETX=alice,SECRETX=bob", want: "twice"},
		"bad file line":      {file: "SECRETX\n", want: ":1:"},
		"bad file scope":     {file: "SECRETX alice admin\n", want: "scope 1"},
		"missing file":       {file: "-", want: "AUTH_TOKENS_FILE"},
		"twice over both":    {list: "SECRETX=alice", file: "SECRETX bob\n", want: "twice"},
		"token after comma":  {list: "t0ken=alice:upload,SECRETX", want: "scope 2"},
		"token as caller":    {file: "alice SECRETX!\n", want: "caller"},
		"token as caller 2":  {list: "alice=SECRETX/", want: "caller"},
		"dot-dot prefix":     {list: "SECRETX=alice:upload:users/../x", want: `subject prefix 1 is not a subject: events: invalid: subject: has a ".." segment`},
		"format char prefix": {file: "SECRETX alice * users/\u200bSECRETX\n", want: "subject prefix 1"},
		"too many fields":    {file: "SECRETX alice upload users/ extra\n", want: ":1:"},
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

func TestWeak(t *testing.T) {
	t.Parallel()
	strong := "Zq3vX9pL2mN8rT4wY6bC1dF5gH7jK0sA" // 32 random characters
	for list, want := range map[string]string{
		strong + "=alice":                                    "",
		strong + "==alice,b" + strong + "=bob":               "",
		"s3cr3t=alice":                                       "AUTH_TOKENS entry 1: the token is shorter than 32 characters",
		strong + "=alice,CHANGE-ME=bob":                      "AUTH_TOKENS entry 2: the token is a known placeholder",
		"CHANGE-ME-TOO-0123456789abcdefghijklmn=bob":         "AUTH_TOKENS entry 1: the token is a known placeholder",
		"dev-token=dev":                                      "AUTH_TOKENS entry 1: the token is a known placeholder",
		"my-example-token-0123456789abcdefghijk=x":           "AUTH_TOKENS entry 1: the token is a known placeholder",
		"abababababababababababababababababab=x":             "AUTH_TOKENS entry 1: the token has fewer than 8 distinct characters",
		strings.Repeat("x", 31) + "=a," + strong[:31] + "=b": "AUTH_TOKENS entry 1: the token is shorter than 32 characters\nAUTH_TOKENS entry 2: the token is shorter than 32 characters",
	} {
		tokens, err := auth.Load(list, "")
		if err != nil {
			t.Fatalf("Load(%q): %v", list, err)
		}
		err = tokens.Weak()
		switch {
		case want == "" && err != nil:
			t.Errorf("Weak for %q: got %v, want nil", list, err)
		case want != "" && (err == nil || err.Error() != want):
			t.Errorf("Weak for %q: got %v, want %q", list, err, want)
		}
		if err != nil {
			token, _, _ := strings.Cut(list, "=")
			if strings.Contains(err.Error(), token) {
				t.Errorf("Weak: the error %q repeats the token", err)
			}
		}
	}
	// The file is checked the same way, by line.
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("# ok\n"+strong+" alice\nshort bob\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.Load("", file)
	if err != nil {
		t.Fatal(err)
	}
	if err := tokens.Weak(); err == nil || !strings.Contains(err.Error(), file+":3: the token is shorter") {
		t.Errorf("Weak of the file: got %v, want line 3 named", err)
	}
}

func TestMayUse(t *testing.T) {
	t.Parallel()
	anything := auth.Caller{Name: "admin"}
	scoped := auth.Caller{Name: "alice", Prefixes: []string{"users/42/", "teams/7"}}
	for subject, want := range map[string]bool{
		"users/42/avatar":   true,
		"users/42/a/b":      true,
		"users/42/":         true,
		"users/42":          false, // "users/42/" asks for something below it
		"users/420/avatar":  false,
		"users/4":           false,
		"teams/7":           true,
		"teams/7/logo":      true,
		"teams/70/logo":     false,
		"teams/7x":          false,
		"Users/42/avatar":   false,
		"x/users/42/avatar": false,
		"":                  false,
	} {
		if got := scoped.MayUse(subject); got != want {
			t.Errorf("MayUse(%q): got %v, want %v", subject, got, want)
		}
		err := scoped.CheckSubject(subject)
		if (err == nil) != want {
			t.Errorf("CheckSubject(%q): got %v, want allowed %v", subject, err, want)
		}
		if se, ok := errors.AsType[*auth.SubjectError](err); err != nil && (!ok || !slices.Equal(se.Prefixes, scoped.Prefixes)) {
			t.Errorf("CheckSubject(%q): got %#v, want a *SubjectError with the caller's prefixes", subject, err)
		}
		if !anything.MayUse(subject) || anything.CheckSubject(subject) != nil {
			t.Errorf("a caller without prefixes may not use %q", subject)
		}
	}
}
