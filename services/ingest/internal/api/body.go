package api

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// BodyTimeouts say how a request body must keep arriving. A body that
// breaks them ends its request with 408: a client cannot hold a request
// open by trickling its body, or by not sending it at all.
//
// Only the time spent waiting for the client counts: while ingest is not
// reading (staging waits for JetStream), the client's bytes wait in the
// connection's buffers and are read at once.
type BodyTimeouts struct {
	// Idle is the longest wait for the next bytes of a body; 0 disables
	// both rules.
	Idle time.Duration
	// MinRate is the slowest a body may arrive, in bytes per second: the
	// time spent waiting for a body may not pass Idle plus 1 s for every
	// MinRate bytes received. 0 leaves Idle alone.
	MinRate int64
}

// SlowBodyError is a body that did not arrive as fast as BodyTimeouts
// require: the request ends with 408.
type SlowBodyError struct {
	// Received is how many bytes had arrived.
	Received int64
	// Waited is how long the request waited for them.
	Waited time.Duration
}

func (e *SlowBodyError) Error() string {
	return fmt.Sprintf("the body did not arrive in time: %d bytes in %v of waiting", e.Received, e.Waited.Round(time.Millisecond))
}

// guardedBody reads a request body under BodyTimeouts: before each read it
// sets the connection's read deadline to what the body's budget allows.
type guardedBody struct {
	body     io.ReadCloser
	rc       *http.ResponseController
	limits   BodyTimeouts
	received int64
	waited   time.Duration
	state    bodyState
}

// bodyState is where the reading of a body stands.
type bodyState int

const (
	bodyUnread  bodyState = iota // not read to its end
	bodyRead                     // read to its end: no deadline is left set
	bodyTooSlow                  // the budget ran out
)

func guardBody(w http.ResponseWriter, body io.ReadCloser, limits BodyTimeouts) *guardedBody {
	return &guardedBody{body: body, rc: http.NewResponseController(w), limits: limits}
}

func (g *guardedBody) Read(p []byte) (int, error) {
	switch {
	case g.state == bodyTooSlow:
		return 0, g.tooSlow()
	case g.state == bodyRead || g.limits.Idle <= 0:
		n, err := g.body.Read(p)
		g.received += int64(n)
		return n, err
	}
	budget := g.limits.Idle
	if g.limits.MinRate > 0 {
		earned := time.Duration(float64(g.received) / float64(g.limits.MinRate) * float64(time.Second))
		budget = min(budget, g.limits.Idle+earned-g.waited)
	}
	if budget <= 0 {
		g.state = bodyTooSlow
		return 0, g.tooSlow()
	}
	start := time.Now()
	// A connection without deadlines (none but HTTP/1 and HTTP/2 have
	// them) is read without.
	_ = g.rc.SetReadDeadline(start.Add(budget))
	n, err := g.body.Read(p)
	g.waited += time.Since(start)
	g.received += int64(n)
	switch {
	case err == io.EOF:
		// The server reads on in the background to notice a client that
		// goes away; a deadline left set would end that read.
		_ = g.rc.SetReadDeadline(time.Time{})
		g.state = bodyRead
	case err != nil && isTimeout(err):
		g.state = bodyTooSlow
		return n, g.tooSlow()
	}
	return n, err
}

func (g *guardedBody) Close() error { return g.body.Close() }

func (g *guardedBody) tooSlow() error {
	return &SlowBodyError{Received: g.received, Waited: g.waited}
}

// isTimeout reports whether err is a read deadline that passed.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
