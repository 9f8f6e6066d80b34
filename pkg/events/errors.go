package events

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// InvalidError is the error Decode, Validate, FromCloudEvent and the constructors return for
// an event that cannot be accepted. Its Reason is also the dead-letter reason.
//
// Error reads e.g. "events: invalid: sha256: not 64 lowercase hex characters".
type InvalidError struct {
	// Reason is one of ReasonMalformed, ReasonInvalid, ReasonUnknownType, ReasonTooLarge.
	Reason string
	// Attribute is the attribute or header at fault, "" when not one attribute.
	Attribute string
	// Msg says what is wrong, in lower case.
	Msg string
	// Err is the wrapped cause; may be nil.
	Err error
}

// Error implements error.
func (e *InvalidError) Error() string {
	var b strings.Builder
	b.WriteString("events: ")
	b.WriteString(e.Reason)
	if e.Attribute != "" {
		b.WriteString(": ")
		b.WriteString(e.Attribute)
	}
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the wrapped cause.
func (e *InvalidError) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of the [*InvalidError] in err's chain, or "" when there is none.
func ReasonOf(err error) string {
	if ie, ok := errors.AsType[*InvalidError](err); ok {
		return ie.Reason
	}
	return ""
}

func invalidf(reason, attr, format string, args ...any) *InvalidError {
	return &InvalidError{Reason: reason, Attribute: attr, Msg: fmt.Sprintf(format, args...)}
}

func invalidWrap(reason, attr, msg string, err error) *InvalidError {
	return &InvalidError{Reason: reason, Attribute: attr, Msg: msg, Err: err}
}

// clip shortens untrusted text quoted in an error message to at most 64 bytes of valid UTF-8.
func clip(s string) string {
	const max = 64
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}
