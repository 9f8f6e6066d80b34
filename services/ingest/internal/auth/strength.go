package auth

import (
	"errors"

	"github.com/blobref/blobref/internal/bearer"
)

// MinTokenLen is the shortest token ingest serves with (bearer.MinLen).
const MinTokenLen = bearer.MinLen

// weakness says why token is too weak to serve with, or "" (bearer.Weakness).
var weakness = bearer.Weakness

// Weak returns an error naming where each weak token is configured, and
// why it is weak (shorter than MinTokenLen, a known placeholder such as
// CHANGE-ME or dev-token, or too few distinct characters), or nil when
// there is none. It never repeats a token. ingest refuses to start with a
// weak token unless told it runs on a development machine.
func (t *Tokens) Weak() error {
	return errors.Join(t.weak...)
}
