package main

import (
	"os"
	"strings"
	"testing"
)

// TestDocsShowTheExample checks that the README and docs/architecture.md's
// "How to add a side effect" show this example's main.go as it is.
func TestDocsShowTheExample(t *testing.T) {
	t.Parallel()
	code, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"../../README.md", "../../docs/architecture.md"} {
		doc, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(doc), "```go\n"+string(code)+"```\n") {
			t.Errorf("%s does not show examples/auditlog/main.go as it is: copy it into its code block", path)
		}
	}
	if n := strings.Count(string(code), "\n"); n > 40 {
		t.Errorf("main.go has %d lines, want at most 40: a side effect should take few", n)
	}
}
