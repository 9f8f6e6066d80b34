package uploads

import (
	"errors"
	"fmt"
	"strings"
)

// The outcomes of Submit and Status that are not the service's fault. The
// HTTP layer maps each of them (and the error types below) to a status in
// one place.
var (
	// ErrNotFound: no upload with this id belongs to the caller.
	ErrNotFound = errors.New("uploads: no such upload")
	// ErrBusy: a request with the same key is being received right now.
	ErrBusy = errors.New("uploads: a request with this idempotency key is in progress")
	// ErrEmptyBody: the request has no bytes to upload.
	ErrEmptyBody = errors.New("uploads: the body is empty")
	// ErrStaleStaging: an earlier attempt with this key staged other bytes
	// and never got recorded; they were removed, and a retry stages afresh.
	ErrStaleStaging = errors.New("uploads: an unfinished earlier attempt with this key staged other bytes; retry")
)

// MismatchError is returned when an idempotency key is reused for a
// different request: other bytes, subject or content type.
type MismatchError struct {
	ID     string
	Fields []string // what differs: "body", "subject", "content type"
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("uploads: %s: the idempotency key was first used with another %s", e.ID, strings.Join(e.Fields, ", "))
}

// BodyError is a failure to read the request body: the client went away,
// sent fewer bytes than announced, or more than allowed (the wrapped error
// then is an *http.MaxBytesError).
type BodyError struct{ Err error }

func (e *BodyError) Error() string { return "uploads: reading the body: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

// UnavailableError is a failure of a dependency (Postgres, NATS, JetStream)
// that a retry may not meet: the client should try again later.
type UnavailableError struct {
	Op  string // what failed, e.g. "publish"
	Err error
}

func (e *UnavailableError) Error() string { return "uploads: " + e.Op + ": " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

func unavailable(op string, err error) error { return &UnavailableError{Op: op, Err: err} }
