package proc

import (
	"path/filepath"
	"testing"
)

// A service that ends on its own leaves its reason as its last log line;
// the harness's own "=== ... exit" line after it is skipped.
func TestLastWordsIsTheProcessesLastLine(t *testing.T) {
	log := filepath.Join(t.TempDir(), "svc.log")
	p, err := Start("svc", log, "/bin/sh", nil, "-c", `echo starting; echo "listen tcp 127.0.0.1:1: bind: address already in use" >&2; exit 1`)
	if err != nil {
		t.Fatal(err)
	}
	if e := p.Wait(); e.Err == nil || e.Requested || e.SelfKilled {
		t.Fatalf("exit = %+v, want an unrequested failure", e)
	}
	if got, want := LastWords(log), "listen tcp 127.0.0.1:1: bind: address already in use"; got != want {
		t.Fatalf("LastWords = %q, want %q", got, want)
	}
}
