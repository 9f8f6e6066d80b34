// Package failpoint lets tests crash, fail or slow a running service at named
// points between its side effects.
//
// Failpoints exist only in binaries built with the build tag
// blobref_failpoints, as the tests build the services (internal/testenv).
// Release builds (make build, the Dockerfile) have none: Inject is an empty
// function there, and Enable and Check refuse a non-empty specification, so
// a service started with BLOBREF_FAILPOINTS stops with an error that says
// so rather than run without the failpoints it was asked for.
//
// In a build with failpoints, they are off unless Enable is called with a
// non-empty specification, which the services read from the
// BLOBREF_FAILPOINTS environment variable. When off, Inject costs one
// atomic load.
//
// A specification is a semicolon-separated list of name=action pairs:
//
//	blob/after-effect=crash;ref/before-ack=error;blob/before-effect=delay(200ms)
//
// Actions:
//
//	crash          the process kills itself with SIGKILL, as a crash would
//	error          Inject returns an error (a transient failure of the step)
//	delay(D)       Inject sleeps for the Go duration D (or until ctx is done)
//	N*ACTION       the action fires on the first N hits only, then the point is off
//	P%ACTION       the action fires on each hit with probability P (0-100)
package failpoint

import "errors"

// BuildTag is the build tag that compiles failpoints into a binary.
const BuildTag = "blobref_failpoints"

// ErrInjected is the error returned by a failpoint whose action is "error".
var ErrInjected = errors.New("failpoint: injected error")

// ErrNotCompiled is what Enable and Check return for a non-empty
// specification in a binary built without failpoints.
var ErrNotCompiled = errors.New("failpoint: this binary has no failpoints (release build); " +
	"they exist only in builds with -tags " + BuildTag)
