package freeport

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestPortIsBelowTheEphemeralRangeAndBindable(t *testing.T) {
	high := ephemeralLow()
	if high-low < 1000 {
		t.Skipf("ephemeral range starts at %d: freeport falls back to kernel ports", high)
	}
	seen := map[int]bool{}
	for range 50 {
		p, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if p < low || p >= high {
			t.Fatalf("port %d outside [%d, %d)", p, low, high)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		ln.Close()
	}
}

// A port handed out here is locked against every other process: another
// lock on its file (a second open file description, as another process
// would hold) fails until this process exits.
func TestPortIsReservedAgainstOtherProcesses(t *testing.T) {
	p, err := Port()
	if err != nil {
		t.Fatal(err)
	}
	if ephemeralLow()-low < 1000 {
		t.Skip("kernel ports are not reserved")
	}
	path := filepath.Join(os.TempDir(), "blobref-freeport-"+strconv.Itoa(os.Getuid()), strconv.Itoa(p))
	if f, ok := lock(path); ok {
		f.Close()
		t.Fatalf("port %d's lock file %s could be locked again", p, path)
	}
}
