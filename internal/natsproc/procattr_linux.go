package natsproc

import "syscall"

// sysProcAttr has the kernel kill the server should the test process die
// without stopping it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
