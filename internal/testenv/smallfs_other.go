//go:build !linux

package testenv

import "testing"

// SmallFS is only available on Linux (tmpfs).
func SmallFS(t testing.TB, size int64) string {
	t.Helper()
	t.Fatal("SmallFS needs Linux")
	return ""
}

// Fill is only available on Linux.
func Fill(t testing.TB, dir string) (free func()) {
	t.Helper()
	t.Fatal("Fill needs Linux")
	return nil
}
