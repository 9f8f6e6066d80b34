//go:build !linux

package natsproc

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
