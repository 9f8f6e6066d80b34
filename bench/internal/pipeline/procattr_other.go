//go:build !linux

package pipeline

import "syscall"

// sysProcAttr is the default: the benchmark reads Linux's /proc and is not
// meant to run elsewhere.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
