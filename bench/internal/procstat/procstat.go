// Package procstat reads what Linux knows about a process's memory from
// /proc: its resident set now (VmRSS) and at its peak (VmHWM), and resets
// that peak so that it can be measured over one stretch of work.
package procstat

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// Memory is a process's resident memory, in bytes.
type Memory struct {
	// RSS is the resident set now (VmRSS).
	RSS int64
	// Peak is the largest resident set since the process started or since
	// ResetPeak (VmHWM).
	Peak int64
}

// ReadMemory reads VmRSS and VmHWM of process pid from /proc/<pid>/status.
func ReadMemory(pid int) (Memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("procstat: %w", err)
	}
	return parseStatus(data)
}

// parseStatus reads VmRSS and VmHWM (both in kB) from the text of
// /proc/<pid>/status.
func parseStatus(data []byte) (Memory, error) {
	var m Memory
	var haveRSS, havePeak bool
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		name, value, ok := bytes.Cut(s.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(name) {
		case "VmRSS":
			dst, haveRSS = &m.RSS, true
		case "VmHWM":
			dst, havePeak = &m.Peak, true
		default:
			continue
		}
		kb, unit, _ := bytes.Cut(bytes.TrimSpace(value), []byte(" "))
		n, err := strconv.ParseInt(string(kb), 10, 64)
		if err != nil || string(bytes.TrimSpace(unit)) != "kB" {
			return Memory{}, fmt.Errorf("procstat: %s: %q is not a size in kB", name, value)
		}
		*dst = n << 10
	}
	if !haveRSS || !havePeak {
		return Memory{}, fmt.Errorf("procstat: no VmRSS and VmHWM in the status (a kernel thread, or a zombie)")
	}
	return m, nil
}

// ResetPeak sets the peak (VmHWM) of process pid to its resident set now,
// so that a later ReadMemory reports the peak from here on. It writes 5 to
// /proc/<pid>/clear_refs (Linux 4.0 and later), which needs the rights to
// ptrace the process: the same user, for a child of ours.
func ResetPeak(pid int) error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/clear_refs", pid), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("procstat: reset peak: %w", err)
	}
	_, werr := f.WriteString("5")
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("procstat: reset peak: %w", werr)
	}
	if cerr != nil {
		return fmt.Errorf("procstat: reset peak: %w", cerr)
	}
	return nil
}

// MiB is n bytes in mebibytes.
func MiB(n int64) float64 { return float64(n) / (1 << 20) }
