package api_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
)

// wire records, in order, what the service under test sends to Postgres and
// NATS: one entry per Postgres round trip (a query, a batch or a prepare,
// traced by pgx) and one per NATS protocol operation the client writes
// (PUB, HPUB, SUB, UNSUB, PING, ...), read off the connection. It counts
// what a request costs without relying on timings.
type wire struct {
	mu  sync.Mutex
	ops []string
}

func (w *wire) add(op string) {
	w.mu.Lock()
	w.ops = append(w.ops, op)
	w.mu.Unlock()
}

// mark returns the position of the next op, for since.
func (w *wire) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ops)
}

// since returns the ops recorded from position m on.
func (w *wire) since(m int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.ops[m:]...)
}

// count tallies ops: Postgres round trips ("pg"), NATS round trips
// ("nats": a publish that expects an answer, or a PING), and each NATS verb.
func count(ops []string) map[string]int {
	n := map[string]int{}
	for _, op := range ops {
		kind, rest, _ := strings.Cut(op, " ")
		switch kind {
		case "pg":
			n["pg"]++
		case "nats":
			verb, args, _ := strings.Cut(rest, " ")
			n[verb]++
			if verb == "PING" || strings.HasSuffix(args, "+reply") {
				n["nats"]++
			}
		}
	}
	return n
}

// The pgx tracer hooks: every Postgres round trip the pool makes.

func (w *wire) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	w.add("pg " + firstWords(d.SQL))
	return ctx
}
func (w *wire) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (w *wire) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	var first []string
	for _, q := range d.Batch.QueuedQueries {
		first = append(first, firstWords(q.SQL))
	}
	w.add("pg batch[" + strings.Join(first, "; ") + "]")
	return ctx
}
func (w *wire) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (w *wire) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
func (w *wire) TracePrepareStart(ctx context.Context, _ *pgx.Conn, d pgx.TracePrepareStartData) context.Context {
	w.add("pg prepare " + firstWords(d.SQL))
	return ctx
}
func (w *wire) TracePrepareEnd(context.Context, *pgx.Conn, pgx.TracePrepareEndData) {}

func firstWords(sql string) string {
	f := strings.Fields(sql)
	if len(f) > 4 {
		f = f[:4]
	}
	return strings.Join(f, " ")
}

// Dial is the NATS client's dialer: the connection it returns records the
// protocol operations written to it.
func (w *wire) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &wireConn{Conn: c, w: w}, nil
}

// wireConn parses the client's side of the NATS protocol as it is written:
// a line per operation, and after PUB and HPUB a payload of known size.
type wireConn struct {
	net.Conn
	w    *wire
	mu   sync.Mutex
	line []byte
	skip int // payload bytes still to pass over
}

func (c *wireConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.parse(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *wireConn) parse(p []byte) {
	for len(p) > 0 {
		if c.skip > 0 {
			n := min(c.skip, len(p))
			c.skip -= n
			p = p[n:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.line = append(c.line, p...)
			return
		}
		c.line = append(c.line, p[:i+1]...)
		p = p[i+1:]
		c.op(strings.TrimSpace(string(c.line)))
		c.line = c.line[:0]
	}
}

// op records one operation line; for a publish it notes whether it has a
// reply subject (it expects an answer: a round trip) and skips its payload.
func (c *wireConn) op(line string) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return
	}
	verb := strings.ToUpper(f[0])
	switch verb {
	case "PUB", "HPUB":
		// PUB subject [reply] size; HPUB subject [reply] hdrsize size
		fields := 3
		if verb == "HPUB" {
			fields = 4
		}
		size, _ := strconv.Atoi(f[len(f)-1])
		c.skip = size + 2
		what := f[1]
		if len(f) == fields+1 {
			what += " +reply"
		}
		c.w.add(fmt.Sprintf("nats %s %s", verb, what))
	case "SUB", "UNSUB":
		c.w.add("nats " + verb + " " + f[1])
	case "CONNECT":
		c.w.add("nats CONNECT")
	default: // PING, PONG
		c.w.add("nats " + verb)
	}
}
