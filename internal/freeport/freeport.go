// Package freeport hands out loopback TCP ports for the servers that tests,
// benchmarks and the torture suite start as processes of their own.
//
// Asking the kernel for port 0 and closing the listener is not enough for a
// port that a process binds later, or binds again after a restart: the port
// comes from the ephemeral range, so any outgoing connection made in between
// (a pool connection to Postgres, a client's connection to NATS) may be given
// it as its local port, and the server then fails with "address already in
// use" for as long as that connection lives. freeport picks ports below the
// ephemeral range instead, which the kernel never hands to outgoing
// connections, and reserves each one with a lock file so that test processes
// running at once do not pick the same port.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// low is the lowest port handed out: above the ports the machine's other
// services listen on (Postgres 5432, NATS 4222/6222/8222, RabbitMQ 15672).
const low = 20000

var (
	mu       sync.Mutex
	reserved = map[int]*os.File{} // port -> its lock file, held until exit
)

// Port returns a loopback port that is free now, below the kernel's
// ephemeral range, and not handed out to any other process using freeport
// while this one lives.
func Port() (int, error) {
	high := ephemeralLow()
	if high-low < 1000 {
		return kernelPort()
	}
	mu.Lock()
	defer mu.Unlock()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("blobref-freeport-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("freeport: %w", err)
	}
	n := high - low
	start := rand.IntN(n) // #nosec G404 -- spreads processes over the range; a port is no secret
	for i := range 200 {
		port := low + (start+i)%n
		if reserved[port] != nil {
			continue
		}
		f, ok := lock(filepath.Join(dir, strconv.Itoa(port)))
		if !ok {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			_ = f.Close()
			continue
		}
		_ = ln.Close()
		reserved[port] = f
		return port, nil
	}
	return 0, errors.New("freeport: no free port below the ephemeral range after 200 tries")
}

// Addr returns "127.0.0.1:PORT" for a port from Port.
func Addr() (string, error) {
	p, err := Port()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// lock takes an exclusive, non-blocking lock on path. The kernel releases it
// when the process exits, however it exits.
func lock(path string) (*os.File, bool) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600) // #nosec G304 -- a lock file in freeport's own directory
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, false
	}
	return f, true
}

// ephemeralLow is the first port of the kernel's ephemeral range, 32768 when
// it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	p, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return p
}

// kernelPort is the fallback where the range below the ephemeral ports is
// too small to choose from: a port the kernel picks.
func kernelPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("freeport: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
