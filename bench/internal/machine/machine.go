// Package machine describes the computer a benchmark ran on, for its
// report: CPUs, memory, kernel and Go toolchain.
package machine

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Info is what a benchmark report says about the machine.
type Info struct {
	// CPUs is the number of CPUs this process may use (nproc).
	CPUs int
	// CPUModel is the first "model name" of /proc/cpuinfo ("" elsewhere).
	CPUModel string
	// Memory is the total memory in bytes (0 when unknown).
	Memory int64
	// OS is the operating system and kernel release, e.g. "linux 6.8.0".
	OS string
	// GoVersion is the version of the Go runtime the benchmark runs on.
	GoVersion string
	// Load is the load average over 1, 5 and 15 minutes when Describe ran
	// ("" when unknown): other work on the machine skews a benchmark.
	Load string
}

// Describe reads what it can about this machine; what it cannot read stays
// empty.
func Describe() Info {
	info := Info{CPUs: runtime.NumCPU(), OS: runtime.GOOS, GoVersion: runtime.Version()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		info.CPUModel = field(data, "model name")
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		kb, _, _ := strings.Cut(field(data, "MemTotal"), " ")
		if n, err := strconv.ParseInt(kb, 10, 64); err == nil {
			info.Memory = n << 10
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		info.OS += " " + strings.TrimSpace(string(data))
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(data)); len(f) >= 3 {
			info.Load = strings.Join(f[:3], " ")
		}
	}
	return info
}

// field returns the value of the first "name: value" line of data.
func field(data []byte, name string) string {
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// String is the one-line description a report prints.
func (i Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d CPUs", i.CPUs)
	if i.CPUModel != "" {
		fmt.Fprintf(&b, " (%s)", i.CPUModel)
	}
	if i.Memory > 0 {
		fmt.Fprintf(&b, ", %.1f GiB RAM", float64(i.Memory)/(1<<30))
	}
	fmt.Fprintf(&b, ", %s, %s", i.OS, i.GoVersion)
	if i.Load != "" {
		fmt.Fprintf(&b, "; load average %s at the start", i.Load)
	}
	return b.String()
}
