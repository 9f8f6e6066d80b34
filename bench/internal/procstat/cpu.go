package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of the CPU times in /proc: USER_HZ, which Linux
// fixes at 100 per second in its user-space ABI on every architecture Go
// supports.
const clockTick = 10 * time.Millisecond

// CPU is the CPU time a process used, user and system together.
type CPU struct {
	// Own is the process's own time (utime + stime).
	Own time.Duration
	// Children is the time of its children that exited and were waited
	// for (cutime + cstime).
	Children time.Duration
}

// Total is Own plus Children.
func (c CPU) Total() time.Duration { return c.Own + c.Children }

// ReadCPU reads the CPU times of process pid from /proc/<pid>/stat.
func ReadCPU(pid int) (CPU, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return CPU{}, fmt.Errorf("procstat: %w", err)
	}
	_, c, err := parseStat(data)
	return c, err
}

// parseStat reads the command name and the CPU times from the text of
// /proc/<pid>/stat. The name sits in parentheses and may itself hold spaces
// and parentheses, so the fields are counted from the last ')'.
func parseStat(data []byte) (comm string, c CPU, err error) {
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return "", CPU{}, errors.New("procstat: stat: no command name")
	}
	comm = string(data[open+1 : end])
	// After the name: state (field 3), ... utime (14), stime (15), cutime
	// (16), cstime (17).
	f := strings.Fields(string(data[end+1:]))
	if len(f) < 15 {
		return "", CPU{}, fmt.Errorf("procstat: stat: %d fields after the name, want at least 15", len(f))
	}
	var ticks [4]int64
	for i := range ticks {
		if ticks[i], err = strconv.ParseInt(f[11+i], 10, 64); err != nil {
			return "", CPU{}, fmt.Errorf("procstat: stat: field %d: %w", 14+i, err)
		}
	}
	return comm, CPU{
		Own:      time.Duration(ticks[0]+ticks[1]) * clockTick,
		Children: time.Duration(ticks[2]+ticks[3]) * clockTick,
	}, nil
}

// CommandCPU is the CPU time of every process whose command name (comm, as
// in ps -o comm) is name, their waited-for children included: for
// PostgreSQL ("postgres") that is the postmaster, every backend and
// auxiliary process, and the backends that have exited since it started
// (the postmaster waits for them). A process that exits between two reads
// and has not been waited for yet is missed; so is one this user may not
// read.
func CommandCPU(name string) (time.Duration, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("procstat: %w", err)
	}
	var total time.Duration
	found := false
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // exited meanwhile
		}
		comm, c, err := parseStat(data)
		if err != nil || comm != name {
			continue
		}
		total += c.Total()
		found = true
	}
	if !found {
		return 0, fmt.Errorf("procstat: no process named %q", name)
	}
	return total, nil
}

// MachineBusy is the CPU time every CPU of the machine spent on anything
// but idling and waiting for I/O since boot (the first line of /proc/stat).
func MachineBusy() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("procstat: %w", err)
	}
	return parseMachineBusy(data)
}

// parseMachineBusy adds user, nice, system, irq, softirq and steal of the
// "cpu" line (guest time is part of user already).
func parseMachineBusy(data []byte) (time.Duration, error) {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("procstat: /proc/stat does not start with a cpu line")
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system (idle iowait) irq softirq steal
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("procstat: /proc/stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// Meter reads the CPU time of named groups of processes at once: single
// processes by pid, and every process of a command name (CommandCPU).
type Meter struct {
	pids  map[string]int
	comms map[string]string
}

// AddPID has the meter read process pid as name.
func (m *Meter) AddPID(name string, pid int) {
	if m.pids == nil {
		m.pids = map[string]int{}
	}
	m.pids[name] = pid
}

// AddCommand has the meter read every process named comm as name.
func (m *Meter) AddCommand(name, comm string) {
	if m.comms == nil {
		m.comms = map[string]string{}
	}
	m.comms[name] = comm
}

// Sample is the CPU time of each group, and of the whole machine, at one
// moment.
type Sample struct {
	At      time.Time
	CPU     map[string]time.Duration
	Machine time.Duration
}

// Read reads every group and the machine's busy time.
func (m *Meter) Read() (Sample, error) {
	s := Sample{At: time.Now(), CPU: map[string]time.Duration{}}
	for name, pid := range m.pids {
		c, err := ReadCPU(pid)
		if err != nil {
			return Sample{}, fmt.Errorf("%s: %w", name, err)
		}
		s.CPU[name] = c.Total()
	}
	for name, comm := range m.comms {
		d, err := CommandCPU(comm)
		if err != nil {
			return Sample{}, fmt.Errorf("%s: %w", name, err)
		}
		s.CPU[name] = d
	}
	var err error
	s.Machine, err = MachineBusy()
	return s, err
}

// Sub is the CPU time spent between earlier and s: by group, by the
// machine, and by everything else on it ("other": the machine's busy time
// that no group accounts for).
func (s Sample) Sub(earlier Sample) Usage {
	u := Usage{Wall: s.At.Sub(earlier.At), CPU: map[string]time.Duration{}, Machine: s.Machine - earlier.Machine}
	var sum time.Duration
	for name, d := range s.CPU {
		u.CPU[name] = d - earlier.CPU[name]
		sum += u.CPU[name]
	}
	u.Other = max(0, u.Machine-sum)
	return u
}

// Usage is the CPU time groups used over a stretch of wall-clock time.
type Usage struct {
	Wall    time.Duration
	CPU     map[string]time.Duration
	Machine time.Duration
	Other   time.Duration
}
