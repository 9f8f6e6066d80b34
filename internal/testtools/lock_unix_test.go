//go:build unix

package testtools

import (
	"path/filepath"
	"testing"
	"time"
)

// A second lock on the same file waits, after saying so, until the first
// is released.
func TestLockTakesTurns(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), ".lock-tool")
	unlock, err := lock(path, func() { t.Error("the first lock waited") })
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	got := make(chan error, 1)
	go func() {
		unlock2, err := lock(path, func() { close(waiting) })
		if err == nil {
			unlock2()
		}
		got <- err
	}()
	select {
	case <-waiting:
	case err := <-got:
		t.Fatalf("the second lock did not wait: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the second lock neither waited nor returned within 30s")
	}
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("second lock: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the second lock was not granted within 30s of the release")
	}
}
