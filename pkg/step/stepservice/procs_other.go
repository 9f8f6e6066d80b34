//go:build !unix

package stepservice

import "time"

// processCPU cannot read the process's CPU time here: the governor stays
// off, and GOMAXPROCS is Go's.
func processCPU() (time.Duration, bool) { return 0, false }
