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
	// ErrOverloaded: every Postgres connection stayed in use for as long as
	// a request may wait for one (see BoundedPool); it comes wrapped in an
	// *UnavailableError.
	ErrOverloaded = errors.New("uploads: every Postgres connection is in use")
	// ErrNoReference: the caller has no current reference of the subject.
	ErrNoReference = errors.New("uploads: no current reference")
)

// RequestError is a request that breaks a rule of the event contract: the
// request event it would make could never be published. Nothing is
// recorded or staged for it.
type RequestError struct {
	// Attribute is the event attribute at fault: "subject",
	// "datacontenttype", "id", "owner".
	Attribute string
	// Msg says what is wrong with it.
	Msg string
}

func (e *RequestError) Error() string {
	return "uploads: the request breaks the event contract: " + e.Attribute + ": " + e.Msg
}

// QuotaError is a large body that would take its caller past its quota of
// staged bytes (see StagedQuota).
type QuotaError struct {
	// Limit is the quota, in bytes.
	Limit int64
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("uploads: the caller's staged bytes would exceed its quota of %d", e.Limit)
}

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

// StoreFullError is a body the staging bucket, or the JetStream store it
// lives in, has no room for. Nothing of it is kept and nothing is recorded:
// a retry once space returns (staged bodies are deleted as their uploads
// are stored, and expire after STAGING_TTL) stages it afresh.
type StoreFullError struct{ Err error }

func (e *StoreFullError) Error() string {
	return "uploads: staging: the store is full: " + e.Err.Error()
}
func (e *StoreFullError) Unwrap() error { return e.Err }

// UnavailableError is a failure of a dependency (Postgres, NATS, JetStream)
// that a retry may not meet: the client should try again later.
type UnavailableError struct {
	Op  string // what failed, e.g. "publish"
	Err error
}

func (e *UnavailableError) Error() string { return "uploads: " + e.Op + ": " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

func unavailable(op string, err error) error { return &UnavailableError{Op: op, Err: err} }
