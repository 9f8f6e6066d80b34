//go:build unix

package stack

import (
	"errors"
	"os"
	"syscall"
)

// Each service runs in a process group of its own, so a Ctrl-C in the
// terminal reaches only devstack, which then stops the services in order.

// terminate sends SIGTERM to p's process group.
func terminate(p *os.Process) error { return signalGroup(p, syscall.SIGTERM) }

// kill sends SIGKILL to p's process group.
func kill(p *os.Process) error { return signalGroup(p, syscall.SIGKILL) }

func signalGroup(p *os.Process, sig syscall.Signal) error {
	if err := syscall.Kill(-p.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}
