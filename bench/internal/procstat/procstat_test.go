package procstat

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
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
