// Package auth maps bearer tokens to the callers ingest serves, the scopes
// each may use and the subjects it may upload to.
//
// Tokens come from two places, both optional, merged:
//
//   - AUTH_TOKENS: comma-separated entries "token=caller[:scopes[:prefixes]]",
//     e.g. "s3cr3t...=alice:upload,read:users/42/,teams/7/". An element
//     without "=" continues the entry before it, in the list it is in.
//   - AUTH_TOKENS_FILE: one "token caller [scopes [prefixes]]" per line,
//     lists comma-separated; blank lines and lines starting with # are
//     ignored.
//
// Scopes are upload and read; an entry without scopes, or with "*", has
// every scope. Subject prefixes say which subjects the caller may upload to
// (see [Caller.MayUse]); an entry without prefixes may use every subject
// (the current reference of a subject is kept per caller all the same).
// Prefixes are subjects as the event contract allows them (see
// events.CheckSubject), without commas, and in AUTH_TOKENS without "=".
//
// Tokens are RFC 6750 b64tokens; caller names are 1 to 128 characters of
// [A-Za-z0-9._@-]. [Tokens.Weak] names the tokens too weak to serve with.
// Errors never repeat a token, nor any value of an entry that could be one.
package auth

import (
	"crypto/sha256"
	"fmt"
	"slices"
)

// Scopes a token can grant.
const (
	// ScopeUpload allows POST /v1/uploads.
	ScopeUpload = "upload"
	// ScopeRead allows GET /v1/uploads/{id}.
	ScopeRead = "read"
)

var allScopes = []string{ScopeUpload, ScopeRead}

// Caller is an authenticated client: its identity (part of every upload id
// it creates, and the owner of its subjects) and what it may do.
type Caller struct {
	Name   string
	Scopes []string
	// Prefixes are the subject prefixes the caller may use; none means
	// every subject.
	Prefixes []string
}

// Can reports whether c holds scope.
func (c Caller) Can(scope string) bool { return slices.Contains(c.Scopes, scope) }

// Tokens authenticates bearer tokens.
type Tokens struct {
	// by is keyed by the token's SHA-256, so that a lookup's timing says
	// nothing about how much of a guess matched.
	by map[[sha256.Size]byte]Caller
	// weak says why each weak token is weak, by where it is configured.
	weak []error
}

// Entry is one token as configured.
type Entry struct {
	Token  string
	Caller Caller
	where  string // for errors: "AUTH_TOKENS entry 2", "tokens.txt:3"
}

// New returns Tokens for entries.
func New(entries []Entry) (*Tokens, error) {
	t := &Tokens{by: make(map[[sha256.Size]byte]Caller, len(entries))}
	for i, e := range entries {
		where := e.where
		if where == "" {
			where = fmt.Sprintf("token %d", i+1)
		}
		k := sha256.Sum256([]byte(e.Token))
		if _, dup := t.by[k]; dup {
			return nil, fmt.Errorf("%s: the token is configured twice", where)
		}
		t.by[k] = e.Caller
		if why := weakness(e.Token); why != "" {
			t.weak = append(t.weak, fmt.Errorf("%s: the token %s", where, why))
		}
	}
	return t, nil
}

// Len is the number of tokens.
func (t *Tokens) Len() int { return len(t.by) }

// Authenticate returns the caller token belongs to.
func (t *Tokens) Authenticate(token string) (Caller, bool) {
	c, ok := t.by[sha256.Sum256([]byte(token))]
	return c, ok
}
