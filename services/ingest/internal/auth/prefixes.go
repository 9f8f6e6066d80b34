package auth

import (
	"strings"
)

// MayUse reports whether c may upload to subject: c has no prefixes, or
// one of them starts subject at a segment boundary. A prefix matches whole
// segments: "users/42/" and "users/42" both allow "users/42/avatar", and
// "users/42" allows "users/42" itself; neither allows "users/420/avatar".
// subject is expected to follow the event contract (events.CheckSubject),
// so that it has no ".." segment to climb out of a prefix with.
func (c Caller) MayUse(subject string) bool {
	if len(c.Prefixes) == 0 {
		return true
	}
	for _, p := range c.Prefixes {
		if rest, ok := strings.CutPrefix(subject, p); ok &&
			(rest == "" || strings.HasSuffix(p, "/") || rest[0] == '/') {
			return true
		}
	}
	return false
}

// CheckSubject returns a [*SubjectError] when c may not use subject (see
// MayUse), or nil.
func (c Caller) CheckSubject(subject string) error {
	if c.MayUse(subject) {
		return nil
	}
	return &SubjectError{Prefixes: c.Prefixes}
}

// SubjectError is a subject outside the caller's prefixes: ingest answers
// it with 403.
type SubjectError struct {
	// Prefixes are the prefixes the caller may use.
	Prefixes []string
}

// Error says which prefixes the caller may use; it does not repeat the
// subject.
func (e *SubjectError) Error() string {
	return "the subject is outside the token's subject prefixes " + strings.Join(e.Prefixes, ", ")
}
