//go:build !unix

package stack

import (
	"fmt"
	"os"
)

// lockDataDir only creates the data directory where flock(2) is missing:
// nothing stops a second devstack on it there.
func lockDataDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	return func() {}, nil
}
