//go:build unix

package stack

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// lockFile is held, in the data directory, by the devstack using it.
const lockFile = "devstack.lock"

// lockDataDir takes the data directory for this process, so that a second
// devstack (or a reset) on it stops at once rather than share its store and
// ports. The lock goes with the process, however it ends.
func lockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil { // #nosec G301 -- devstack's Postgres may run as the postgres user (under root), which must reach its data under dir
		return nil, fmt.Errorf("stack: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600) // #nosec G304 -- the lock in the data directory devstack was given
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path) // #nosec G304 -- the same lock file
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("stack: another devstack (pid %s) is using %s: stop it first, or give this one another DEVSTACK_DATA_DIR",
				bytes.TrimSpace(holder), dir)
		}
		return nil, fmt.Errorf("stack: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { _ = f.Close() }, nil // closing releases the lock
}
