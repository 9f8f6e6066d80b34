package steprun

import (
	"errors"
	"fmt"

	"github.com/blobref/blobref/pkg/events"
)

// PermanentError marks a failure that no retry can fix: the message is
// terminated and dead-lettered with Reason.
type PermanentError struct {
	Reason string // a dead-letter reason, e.g. events.ReasonConflict
	Err    error
}

func (e *PermanentError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so that the message is dead-lettered with reason.
func Permanent(reason string, err error) error {
	return &PermanentError{Reason: reason, Err: err}
}

// Conflict reports that the same upload id arrived with another fingerprint.
func Conflict(format string, args ...any) error {
	return Permanent(events.ReasonConflict, fmt.Errorf(format, args...))
}

// deadReason returns the dead-letter reason of err and true when err is
// permanent; every other error is transient and retried.
func deadReason(err error) (string, bool) {
	var perm *PermanentError
	if errors.As(err, &perm) {
		return perm.Reason, true
	}
	var inv *events.InvalidError
	if errors.As(err, &inv) {
		return inv.Reason, true
	}
	return "", false
}
