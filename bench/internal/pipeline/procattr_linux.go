package pipeline

import "syscall"

// sysProcAttr puts a child in its own process group, so that a Ctrl-C at
// the terminal reaches the benchmark only (which then stops the pipeline in
// order), and has the kernel kill it should the benchmark die without
// stopping it: SIGKILL, because the pipeline is disposable and a service
// stuck in its shutdown must not outlive the benchmark.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
