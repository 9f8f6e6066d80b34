package main

import (
	"os"
	"strings"
	"testing"
)

// TestArchitectureShowsTheExample checks that docs/architecture.md's "How to
// add a side effect" shows this example's main.go as it is.
func TestArchitectureShowsTheExample(t *testing.T) {
	t.Parallel()
	code, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```go\n"+string(code)+"```\n") {
		t.Errorf("docs/architecture.md does not show examples/auditlog/main.go as it is: copy it into its code block")
	}
	if n := strings.Count(string(code), "\n"); n > 40 {
		t.Errorf("main.go has %d lines, want at most 40: a side effect should take few", n)
	}
}
