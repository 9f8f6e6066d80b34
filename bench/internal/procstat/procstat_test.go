package procstat

import (
	"maps"
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
	want := CPU{Own: Times{1500 * time.Millisecond, 250 * time.Millisecond}, Children: Times{70 * time.Millisecond, 30 * time.Millisecond}}
	if comm != "postgres: 15/main (x)" || c != want || c.Total().Total() != 1850*time.Millisecond {
		t.Errorf("got %q %+v, want the name with its parentheses and %+v", comm, c, want)
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

// TestSubGroups checks how a group's time is counted between two reads: a
// process present at both by its difference, one that appeared by all its
// time, one that exited as lost.
func TestSubGroups(t *testing.T) {
	t.Parallel()
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	at := time.Now()
	earlier := Sample{At: at, Machine: ms(1000),
		CPU:     map[string]Times{"pg": {ms(150), ms(15)}, "one": {ms(10), ms(1)}},
		members: map[string]map[int]Times{"pg": {1: {ms(100), ms(10)}, 2: {ms(50), ms(5)}}},
	}
	later := Sample{At: at.Add(time.Second), Machine: ms(2000),
		CPU:     map[string]Times{"pg": {ms(190), ms(24)}, "one": {ms(40), ms(21)}},
		members: map[string]map[int]Times{"pg": {1: {ms(130), ms(20)}, 3: {ms(60), ms(4)}}},
	}
	u := later.Sub(earlier)
	if got, want := u.CPU["pg"], (Times{ms(30 + 60), ms(10 + 4)}); got != want {
		t.Errorf("group: got %+v, want %+v (pid 1's growth and all of the new pid 3)", got, want)
	}
	if got, want := u.CPU["one"], (Times{ms(30), ms(20)}); got != want {
		t.Errorf("process: got %+v, want %+v", got, want)
	}
	if u.Lost["pg"] != 1 || u.Lost["one"] != 0 {
		t.Errorf("lost: got %v, want pid 2 of pg", u.Lost)
	}
	if want := ms(1000 - 104 - 50); u.Other != want || u.Wall != time.Second {
		t.Errorf("other: got %v over %v, want %v over 1s", u.Other, u.Wall, want)
	}
	if got, want := u.Per("pg", 2), (Times{ms(45), ms(7)}); got != want {
		t.Errorf("per upload: got %+v, want %+v", got, want)
	}
}

// TestSubParts checks that a group made of parts reports each part's time,
// counted as the group's is, and that the parts add up to the group.
func TestSubParts(t *testing.T) {
	t.Parallel()
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	parts := map[int]string{1: "ingest", 2: "ingest", 3: "refwriter"}
	earlier := Sample{CPU: map[string]Times{"pg": {ms(60), ms(6)}},
		members: map[string]map[int]Times{"pg": {1: {ms(10), ms(1)}, 2: {ms(20), ms(2)}, 3: {ms(30), ms(3)}}},
		parts:   map[string]map[int]string{"pg": parts},
	}
	later := Sample{CPU: map[string]Times{"pg": {ms(100), ms(12)}},
		members: map[string]map[int]Times{"pg": {1: {ms(15), ms(2)}, 2: {ms(30), ms(4)}, 3: {ms(55), ms(6)}}},
		parts:   map[string]map[int]string{"pg": parts},
	}
	u := later.Sub(earlier)
	want := map[string]Times{"ingest": {ms(5 + 10), ms(1 + 2)}, "refwriter": {ms(25), ms(3)}}
	if got := u.Parts["pg"]; !maps.Equal(got, want) {
		t.Errorf("parts: got %+v, want %+v", got, want)
	}
	if got, want := u.CPU["pg"], (Times{ms(40), ms(6)}); got != want {
		t.Errorf("group: got %+v, want %+v, the sum of its parts", got, want)
	}
}

func TestMeter(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("procstat reads Linux's /proc")
	}
	pid := os.Getpid()
	var m Meter
	m.AddPID("self", pid)
	m.AddGroup("group", func() ([]int, error) { return []int{pid, pid}, nil })
	before, err := m.Read()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	after, err := m.Read()
	if err != nil {
		t.Fatal(err)
	}
	u := after.Sub(before)
	if u.CPU["self"].User <= 0 || u.CPU["group"].User <= 0 {
		t.Errorf("got user time %v and %v after spinning for 300ms, want both positive", u.CPU["self"].User, u.CPU["group"].User)
	}
	// A pid listed twice counts once.
	if u.CPU["group"].Total() > u.CPU["self"].Total()+50*time.Millisecond {
		t.Errorf("group of one process listed twice: got %v, want about %v", u.CPU["group"].Total(), u.CPU["self"].Total())
	}
	var split Meter
	split.AddParts("split", func() (map[string][]int, error) { return map[string][]int{"a": {pid}, "b": {pid}}, nil })
	if s, err := split.Read(); err != nil || len(s.parts["split"]) != 1 || s.parts["split"][pid] != "a" {
		t.Errorf("a process listed in two parts: got parts %v (%v), want it in the first only", s.parts["split"], err)
	}
	var empty Meter
	empty.AddGroup("nobody", func() ([]int, error) { return nil, nil })
	if _, err := empty.Read(); err == nil {
		t.Error("got nil, want an error for a group without processes")
	}
}
