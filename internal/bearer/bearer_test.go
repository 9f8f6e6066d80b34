package bearer_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/blobref/blobref/internal/bearer"
)

func TestFromHeader(t *testing.T) {
	t.Parallel()
	for header, want := range map[string]string{
		"Bearer abc":   "abc",
		"bearer  abc ": "abc",
		"Basic abc":    "",
		"Bearer":       "",
		"Bearer ":      "",
		"abc":          "",
	} {
		got, ok := bearer.FromHeader(header)
		if got != want || ok != (want != "") {
			t.Errorf("FromHeader(%q): got %q %v, want %q", header, got, ok, want)
		}
	}
}

func TestSplitList(t *testing.T) {
	t.Parallel()
	got, ok := bearer.SplitList(" a=alice:upload,read:users/, teams/ ,b===bob,, c=carol")
	want := []bearer.Entry{{"a", "alice:upload,read:users/,teams/"}, {"b==", "bob"}, {"c", "carol"}}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("SplitList: got %q %v, want %q", got, ok, want)
	}
	if got, ok := bearer.SplitList("read,a=alice"); ok {
		t.Errorf("SplitList of a list starting without =: got %q, want not ok", got)
	}
	if got, ok := bearer.SplitList(""); !ok || len(got) != 0 {
		t.Errorf("SplitList(\"\"): got %q %v, want no entries", got, ok)
	}
}

func TestReadFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("# tokens\n\n  tok1 alice read \ntok2\tbob\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := bearer.ReadFile(path, func(where string, fields []string) error {
		got = append(got, where+" "+strings.Join(fields, "|"))
		return nil
	})
	want := []string{path + ":3 tok1|alice|read", path + ":4 tok2|bob"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ReadFile: got %q, %v, want %q", got, err, want)
	}
	if err := bearer.ReadFile(filepath.Join(t.TempDir(), "missing"), nil); !os.IsNotExist(err) {
		t.Errorf("ReadFile of a missing file: got %v, want not exist", err)
	}
}

func TestWeakness(t *testing.T) {
	t.Parallel()
	strong := "Zq3vX9pL2mN8rT4wY6bC1dF5gH7jK0sA" // 32 random characters
	for token, want := range map[string]string{
		strong:                                   "",
		"":                                       "is empty or holds white space",
		strong[:16] + " " + strong[16:]:          "is empty or holds white space",
		"s3cr3t":                                 "is shorter than 32 characters",
		"CHANGE-ME-TOO-0123456789abcdefghijklmn": "is a known placeholder",
		"dev-token":                              "is a known placeholder",
		"abababababababababababababababababab":   "has fewer than 8 distinct characters",
	} {
		got := bearer.Weakness(token)
		if got != want {
			t.Errorf("Weakness(%q): got %q, want %q", token, got, want)
		}
		if token != "" && strings.Contains(got, token) {
			t.Errorf("Weakness: %q repeats the token", got)
		}
	}
	if !bearer.ValidName("alice@example.org") || bearer.ValidName("a b") || bearer.ValidName(strings.Repeat("a", 129)) {
		t.Error("ValidName: want alice@example.org valid, \"a b\" and 129 characters not")
	}
}
