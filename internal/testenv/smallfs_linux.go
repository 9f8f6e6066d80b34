package testenv

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

// SmallFS mounts a file system of size bytes (tmpfs) on a new directory of
// the test's and returns it; the test's cleanup unmounts it. A store kept
// there fills up for real: writes fail with ENOSPC. Mounting needs
// CAP_SYS_ADMIN (root, or a user namespace: unshare -Urm go test ...); a
// test that cannot mount fails, it does not skip.
func SmallFS(t testing.TB, size int64) string {
	t.Helper()
	// Not under t.TempDir(), whose directories only the test's user may
	// enter: a server running as another user (Postgres) may use it.
	dir, err := os.MkdirTemp("", "blobref-smallfs-")
	if err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("size=%d,mode=0777", size)
	if err = syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		_ = os.Remove(dir)
		t.Fatalf("mount a %d-byte tmpfs on %s: %v (a full store needs a small file system: run the test as root or under unshare -Urm)", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
		_ = os.Remove(dir)
	})
	return dir
}

// Fill writes a file into dir until the file system is full, and returns
// a function that removes it again.
func Fill(t testing.TB, dir string) (free func()) {
	t.Helper()
	f, err := os.CreateTemp(dir, "filler-")
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err = f.Write(chunk); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fill %s: %v, want ENOSPC", dir, err)
	}
	// The last partial chunk may have left a few bytes: fill them too.
	for _, n := range []int{4096, 512, 1} {
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
	_ = f.Close()
	return func() {
		if err := os.Remove(f.Name()); err != nil {
			t.Errorf("free %s: %v", dir, err)
		}
	}
}
