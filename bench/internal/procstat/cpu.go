package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of the CPU times in /proc: USER_HZ, which Linux
// fixes at 100 per second in its user-space ABI on every architecture Go
// supports.
const clockTick = 10 * time.Millisecond

// Times is CPU time split into user and system (kernel) time.
type Times struct {
	User, System time.Duration
}

// Total is user plus system time.
func (t Times) Total() time.Duration { return t.User + t.System }

// Add is t plus o.
func (t Times) Add(o Times) Times { return Times{t.User + o.User, t.System + o.System} }

// Sub is t minus o.
func (t Times) Sub(o Times) Times { return Times{t.User - o.User, t.System - o.System} }

// Per is t divided among n operations (zero for n < 1).
func (t Times) Per(n int) Times {
	if n < 1 {
		return Times{}
	}
	return Times{t.User / time.Duration(n), t.System / time.Duration(n)}
}

// CPU is the CPU time a process used.
type CPU struct {
	// Own is the process's own time (utime, stime).
	Own Times
	// Children is the time of its children that exited and were waited
	// for (cutime, cstime).
	Children Times
}

// Total is Own plus Children.
func (c CPU) Total() Times { return c.Own.Add(c.Children) }

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
	var ticks [4]time.Duration
	for i := range ticks {
		n, err := strconv.ParseInt(f[11+i], 10, 64)
		if err != nil {
			return "", CPU{}, fmt.Errorf("procstat: stat: field %d: %w", 14+i, err)
		}
		ticks[i] = time.Duration(n) * clockTick
	}
	return comm, CPU{Own: Times{ticks[0], ticks[1]}, Children: Times{ticks[2], ticks[3]}}, nil
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
// processes by pid, and groups whose processes are listed anew at each
// read (the Postgres backends of a set of connections, say).
type Meter struct {
	pids   map[string]int
	groups map[string]func() (map[string][]int, error)
}

// AddPID has the meter read process pid as name: its own time and its
// waited-for children's.
func (m *Meter) AddPID(name string, pid int) {
	if m.pids == nil {
		m.pids = map[string]int{}
	}
	m.pids[name] = pid
}

// AddGroup has the meter read, as name, the processes list returns at each
// read (their own time only). A process that appears between two reads
// counts with all its time; one that exits between them is missed, and
// counted in Usage.Lost.
func (m *Meter) AddGroup(name string, list func() ([]int, error)) {
	m.AddParts(name, func() (map[string][]int, error) {
		pids, err := list()
		return map[string][]int{"": pids}, err
	})
}

// AddParts is AddGroup for a group made of parts (the Postgres backends
// of each service's connections, say): list returns the processes of each
// part, and the usage has the time of each part (Usage.Parts) besides the
// group's. A process listed in two parts counts in the first by name.
func (m *Meter) AddParts(name string, list func() (map[string][]int, error)) {
	if m.groups == nil {
		m.groups = map[string]func() (map[string][]int, error){}
	}
	m.groups[name] = list
}

// Sample is the CPU time of each process and group, and of the whole
// machine, at one moment.
type Sample struct {
	At  time.Time
	CPU map[string]Times
	// members holds the time of each process of a group, by group and pid;
	// parts the part of each, by group and pid.
	members map[string]map[int]Times
	parts   map[string]map[int]string
	Machine time.Duration
}

// Read reads every process and group and the machine's busy time. A group
// whose list is empty is an error: it would read as no work at all.
func (m *Meter) Read() (Sample, error) {
	s := Sample{At: time.Now(), CPU: map[string]Times{}, members: map[string]map[int]Times{}, parts: map[string]map[int]string{}}
	for name, pid := range m.pids {
		c, err := ReadCPU(pid)
		if err != nil {
			return Sample{}, fmt.Errorf("%s: %w", name, err)
		}
		s.CPU[name] = c.Total()
	}
	for name, list := range m.groups {
		byPart, err := list()
		if err != nil {
			return Sample{}, fmt.Errorf("%s: %w", name, err)
		}
		partOf := map[int]string{}
		for _, part := range slices.Sorted(maps.Keys(byPart)) {
			for _, pid := range byPart[part] {
				if _, ok := partOf[pid]; !ok {
					partOf[pid] = part
				}
			}
		}
		if len(partOf) == 0 {
			return Sample{}, fmt.Errorf("procstat: %s: no process in the group", name)
		}
		members := map[int]Times{}
		var sum Times
		for pid := range partOf {
			c, err := ReadCPU(pid)
			if err != nil {
				continue // exited since it was listed: counted as lost by Sub
			}
			members[pid] = c.Own
			sum = sum.Add(c.Own)
		}
		s.CPU[name], s.members[name], s.parts[name] = sum, members, partOf
	}
	var err error
	s.Machine, err = MachineBusy()
	return s, err
}

// Sub is the CPU time spent between earlier and s: by process and group,
// by the machine, and by everything else on it ("other": the machine's
// busy time that none accounts for).
func (s Sample) Sub(earlier Sample) Usage {
	u := Usage{Wall: s.At.Sub(earlier.At), CPU: map[string]Times{}, Parts: map[string]map[string]Times{}, Lost: map[string]int{},
		Machine: s.Machine - earlier.Machine}
	var sum time.Duration
	for name, t := range s.CPU {
		if members, ok := s.members[name]; ok {
			t = Times{}
			parts := map[string]Times{}
			for pid, c := range members {
				d := c.Sub(earlier.members[name][pid]) // new since earlier: all of it
				t = t.Add(d)
				if part := s.parts[name][pid]; part != "" {
					parts[part] = parts[part].Add(d)
				}
			}
			if len(parts) > 0 {
				u.Parts[name] = parts
			}
			for pid := range earlier.members[name] {
				if _, ok := members[pid]; !ok {
					u.Lost[name]++
				}
			}
		} else {
			t = t.Sub(earlier.CPU[name])
		}
		u.CPU[name] = t
		sum += t.Total()
	}
	u.Other = max(0, u.Machine-sum)
	return u
}

// Usage is the CPU time processes used over a stretch of wall-clock time.
type Usage struct {
	Wall time.Duration
	CPU  map[string]Times
	// Parts holds, for a group made of parts (Meter.AddParts), the time of
	// each part.
	Parts map[string]map[string]Times
	// Lost counts, by group, the processes that exited between the two
	// reads: their time since the first is missing from CPU.
	Lost    map[string]int
	Machine time.Duration
	Other   time.Duration
}

// Per is the CPU time of process or group name per operation, for n
// operations.
func (u Usage) Per(name string, n int) Times { return u.CPU[name].Per(n) }
