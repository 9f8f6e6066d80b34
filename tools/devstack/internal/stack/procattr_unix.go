//go:build unix && !linux

package stack

import "syscall"

// sysProcAttr puts a service in its own process group.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
