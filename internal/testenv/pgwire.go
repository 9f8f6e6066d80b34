package testenv

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// PGWire counts what Postgres clients send over the connections it dials,
// read from the frontend protocol itself, so it sees every statement
// whichever pgx API sent it.
type PGWire struct {
	connects   atomic.Int64
	roundTrips atomic.Int64
	statements atomic.Int64
	prepares   atomic.Int64
	pings      atomic.Int64
}

// PGWireCounts is a snapshot of a PGWire's counters.
type PGWireCounts struct {
	// Connects is how many connections were opened.
	Connects int64
	// RoundTrips is how many times a client sent after the server last
	// answered it: a pipeline of statements is one round trip, a statement
	// that waits for the one before is another. Pings are not counted.
	RoundTrips int64
	// Statements is how many statements were executed (extended-protocol
	// Execute and simple Query messages, pings apart).
	Statements int64
	// Prepares is how many statements were parsed (Parse messages): a
	// statement cache that works keeps it at zero once warm.
	Prepares int64
	// Pings is how many liveness pings the pool sent on acquiring an idle
	// connection.
	Pings int64
}

// Counts returns the counters now.
func (w *PGWire) Counts() PGWireCounts {
	return PGWireCounts{
		Connects: w.connects.Load(), RoundTrips: w.roundTrips.Load(), Statements: w.statements.Load(),
		Prepares: w.prepares.Load(), Pings: w.pings.Load(),
	}
}

// Sub returns c minus an earlier snapshot.
func (c PGWireCounts) Sub(earlier PGWireCounts) PGWireCounts {
	return PGWireCounts{
		Connects: c.Connects - earlier.Connects, RoundTrips: c.RoundTrips - earlier.RoundTrips,
		Statements: c.Statements - earlier.Statements, Prepares: c.Prepares - earlier.Prepares, Pings: c.Pings - earlier.Pings,
	}
}

// Dial is a pgconn.DialFunc whose connections count what is sent on them.
func (w *PGWire) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{KeepAlive: 5 * time.Minute}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	w.connects.Add(1)
	return &countedConn{Conn: conn, w: w}, nil
}

// Pool returns a pool on url whose connections w counts; the test's cleanup
// closes it.
func (w *PGWire) Pool(t testing.TB, url string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DialFunc = w.Dial
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// countedConn parses the frontend messages written to it. The first
// message of a connection (startup) has no type byte; every later one is
// a type byte and a length that counts itself.
type countedConn struct {
	net.Conn
	w *PGWire

	mu      sync.Mutex
	started bool        // the startup message went
	pending []byte      // the start of a message not yet whole
	read    atomic.Bool // the server sent something since the client last wrote
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Store(true)
	}
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	// Closing is no round trip, and pings are counted apart.
	terminate := len(p) == 5 && p[0] == 'X'
	isPing := len(p) > 5 && p[0] == 'Q' && bytes.HasPrefix(p[5:], ping)
	if c.read.Swap(false) && c.started && !terminate && !isPing {
		c.w.roundTrips.Add(1)
	}
	c.pending = append(c.pending, p...)
	c.parse()
	c.mu.Unlock()
	return c.Conn.Write(p)
}

var ping = []byte("-- ping")

// parse consumes the complete messages in pending.
func (c *countedConn) parse() {
	for {
		if !c.started {
			if len(c.pending) < 4 {
				return
			}
			n := int(binary.BigEndian.Uint32(c.pending))
			if len(c.pending) < n {
				return
			}
			c.pending = c.pending[n:]
			c.started = true
			continue
		}
		if len(c.pending) < 5 {
			return
		}
		n := 1 + int(binary.BigEndian.Uint32(c.pending[1:]))
		if len(c.pending) < n {
			return
		}
		switch c.pending[0] {
		case 'E':
			c.w.statements.Add(1)
		case 'P':
			c.w.prepares.Add(1)
		case 'Q':
			if bytes.HasPrefix(c.pending[5:n], ping) {
				c.w.pings.Add(1)
			} else {
				c.w.statements.Add(1)
			}
		}
		c.pending = c.pending[n:]
	}
}
