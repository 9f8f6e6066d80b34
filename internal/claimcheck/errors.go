package claimcheck

import "errors"

// The outcomes of Staging.Stage that are not JetStream's fault or a plain
// failure; ingest maps each to its answer.
var (
	// ErrStale: an earlier attempt staged other bytes under the name and
	// never finished; they were removed, and a retry stages afresh.
	ErrStale = errors.New("claimcheck: an unfinished earlier attempt staged other bytes under this name")
	// ErrTakenOver: another writer session claimed the object while this
	// one was staging it (a request that took the key over after this
	// one's lease lapsed); this one wrote nothing after that claim.
	ErrTakenOver = errors.New("claimcheck: another attempt took the object over")
)

// BodyError is a failure to read the body being staged. What was staged
// so far stays, for a retry to resume.
type BodyError struct{ Err error }

func (e *BodyError) Error() string { return "claimcheck: reading the body: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

// StoreFullError is a body the staging bucket, or the JetStream store it
// lives in, has no room for. The chunks staged so far are purged where
// permissions allow it.
type StoreFullError struct{ Err error }

func (e *StoreFullError) Error() string { return "claimcheck: the store is full: " + e.Err.Error() }
func (e *StoreFullError) Unwrap() error { return e.Err }

// UnavailableError is a failure of JetStream that a retry may not meet.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "claimcheck: staging: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

func unavailable(err error) error { return &UnavailableError{Err: err} }
