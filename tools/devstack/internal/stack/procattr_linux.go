package stack

import "syscall"

// sysProcAttr puts a service in its own process group and has the kernel
// send it SIGTERM should devstack die without stopping it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
