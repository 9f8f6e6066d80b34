//go:build linux

package blobstore_test

import (
	"testing"

	"github.com/blobref/blobref/internal/blobwatch"
)

// watchLandings counts, with inotify, the objects that land in dir until
// the returned function is called, which returns the number of landings
// and removals of each object name.
func watchLandings(t *testing.T, dir string) func() (writes, deletes map[string]int) {
	t.Helper()
	w, err := blobwatch.Watch(dir)
	if err != nil {
		t.Fatal(err)
	}
	return func() (map[string]int, map[string]int) {
		c, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		return c.Writes, c.Deletes
	}
}
