package procstat

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestParseStatus(t *testing.T) {
	t.Parallel()
	got, err := parseStatus([]byte("Name:\tcat\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Memory{RSS: 1 << 20, Peak: 2 << 20}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"Name:\tkthreadd\n", "VmHWM:\t2 MB\nVmRSS:\t1 kB\n", "VmHWM:\tlots kB\nVmRSS:\t1 kB\n"} {
		if got, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("%q: got %+v, want an error", bad, got)
		}
	}
}

// TestReadAndReset touches 64 MiB, lets it go, and checks that the peak
// remembers it until ResetPeak.
func TestReadAndReset(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("procstat reads Linux's /proc")
	}
	pid := os.Getpid()
	read := func() Memory {
		t.Helper()
		m, err := ReadMemory(pid)
		if err != nil {
			t.Fatal(err)
		}
		if m.RSS <= 0 || m.Peak < m.RSS {
			t.Fatalf("got %+v, want 0 < RSS <= Peak", m)
		}
		return m
	}
	const size = 64 << 20
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i)
	}
	touched := read()
	if touched.RSS < size {
		t.Fatalf("with %d bytes touched: got %+v, want RSS above them", size, touched)
	}
	runtime.KeepAlive(buf)
	buf = nil
	runtime.GC()
	debug.FreeOSMemory()
	freed := read()
	// The kernel sums its RSS counters approximately: allow it 1 MiB.
	if freed.Peak < touched.RSS-(1<<20) {
		t.Errorf("after freeing: got peak %d, want about the %d resident before", freed.Peak, touched.RSS)
	}
	if err := ResetPeak(pid); err != nil {
		t.Fatal(err)
	}
	if reset := read(); reset.Peak > freed.RSS+(4<<20) || reset.Peak >= freed.Peak {
		t.Errorf("after ResetPeak: got peak %d, want about the RSS of %d, below the peak of %d", reset.Peak, freed.RSS, freed.Peak)
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	line := "2208 (postgres: 15/main (x)) S 2207 2207 2207 0 -1 4194368 1 0 0 0 150 25 7 3 20 0 1 0 1 1 1"
	comm, c, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if comm != "postgres: 15/main (x)" || c.Own != 1750*time.Millisecond || c.Children != 100*time.Millisecond || c.Total() != 1850*time.Millisecond {
		t.Errorf("got %q %+v, want the name with its parentheses, own 1.75s, children 0.1s", comm, c)
	}
	for _, bad := range []string{"", "12 cat S 1", "12 (cat) S 1 2 3"} {
		if _, _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("%q: got nil, want an error", bad)
		}
	}
}

func TestParseMachineBusy(t *testing.T) {
	t.Parallel()
	got, err := parseMachineBusy([]byte("cpu  100 20 30 5000 70 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := 156 * 10 * time.Millisecond; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := parseMachineBusy([]byte("intr 1 2 3\n")); err == nil {
		t.Error("got nil, want an error for a file without a cpu line")
	}
}

func TestReadCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("procstat reads Linux's /proc")
	}
	before, err := ReadCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	after, err := ReadCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.Own <= before.Own {
		t.Errorf("got CPU %v after spinning for 300ms, want more than %v", after.Own, before.Own)
	}
	if _, err := MachineBusy(); err != nil {
		t.Error(err)
	}
	if _, err := CommandCPU("no-such-command-name"); err == nil {
		t.Error("got nil, want an error for a command nobody runs")
	}
}
