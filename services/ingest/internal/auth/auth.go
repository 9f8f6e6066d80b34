// Package auth maps bearer tokens to the callers ingest serves and the
// scopes each may use.
//
// Tokens come from two places, both optional, merged:
//
//   - AUTH_TOKENS: comma-separated entries "token=caller[:scope,...]", e.g.
//     "s3cr3t=alice:upload,read,t0k=bob:read". An element without "=" is one
//     more scope of the entry before it.
//   - AUTH_TOKENS_FILE: one "token caller [scope,...]" per line; blank lines
//     and lines starting with # are ignored.
//
// An entry without scopes has every scope. Tokens are RFC 6750 b64tokens;
// caller names are 1 to 128 characters of [A-Za-z0-9._@-]. Errors never
// repeat a token.
package auth

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
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
// it creates) and what it may do.
type Caller struct {
	Name   string
	Scopes []string
}

// Can reports whether c holds scope.
func (c Caller) Can(scope string) bool { return slices.Contains(c.Scopes, scope) }

// Tokens authenticates bearer tokens.
type Tokens struct {
	// by is keyed by the token's SHA-256, so that a lookup's timing says
	// nothing about how much of a guess matched.
	by map[[sha256.Size]byte]Caller
}

// Entry is one token as configured.
type Entry struct {
	Token  string
	Caller Caller
	where  string // for errors: "AUTH_TOKENS entry 2", "tokens.txt:3"
}

// Load parses list (the AUTH_TOKENS format) and, if file is not "", the
// file (the AUTH_TOKENS_FILE format), and returns their tokens. A token
// configured twice is an error.
func Load(list, file string) (*Tokens, error) {
	entries, err := ParseList(list)
	if err != nil {
		return nil, err
	}
	if file != "" {
		more, err := ReadFile(file)
		if err != nil {
			return nil, err
		}
		entries = append(entries, more...)
	}
	return New(entries)
}

// New returns Tokens for entries.
func New(entries []Entry) (*Tokens, error) {
	t := &Tokens{by: make(map[[sha256.Size]byte]Caller, len(entries))}
	for _, e := range entries {
		k := sha256.Sum256([]byte(e.Token))
		if _, dup := t.by[k]; dup {
			return nil, fmt.Errorf("%s: the token is configured twice", e.where)
		}
		t.by[k] = e.Caller
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

// ParseList parses the AUTH_TOKENS format.
func ParseList(s string) ([]Entry, error) {
	var out []Entry
	n := 0
	for elem := range strings.SplitSeq(s, ",") {
		elem = strings.TrimSpace(elem)
		if elem == "" {
			continue
		}
		i := strings.LastIndexByte(elem, '=')
		if i < 0 {
			// One more scope of the previous entry.
			if len(out) == 0 {
				return nil, errors.New("AUTH_TOKENS: entries are token=caller[:scope,...]")
			}
			last := &out[len(out)-1]
			if err := addScope(&last.Caller, elem); err != nil {
				return nil, fmt.Errorf("%s: %w", last.where, err)
			}
			continue
		}
		n++
		e := Entry{Token: elem[:i], where: fmt.Sprintf("AUTH_TOKENS entry %d", n)}
		caller, scope, hasScope := strings.Cut(elem[i+1:], ":")
		e.Caller.Name = caller
		if hasScope {
			if err := addScope(&e.Caller, scope); err != nil {
				return nil, fmt.Errorf("%s: %w", e.where, err)
			}
		}
		out = append(out, e)
	}
	return finish(out)
}

// ReadFile parses an AUTH_TOKENS_FILE.
func ReadFile(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("AUTH_TOKENS_FILE: %w", err)
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		e := Entry{where: fmt.Sprintf("AUTH_TOKENS_FILE %s:%d", path, line)}
		fields := strings.Fields(text)
		switch len(fields) {
		case 3:
			for s := range strings.SplitSeq(fields[2], ",") {
				if err := addScope(&e.Caller, s); err != nil {
					return nil, fmt.Errorf("%s: %w", e.where, err)
				}
			}
			fallthrough
		case 2:
			e.Token, e.Caller.Name = fields[0], fields[1]
		default:
			return nil, fmt.Errorf("%s: want \"token caller [scope,...]\"", e.where)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("AUTH_TOKENS_FILE: %w", err)
	}
	return finish(out)
}

// finish checks the entries and gives scopeless ones every scope.
func finish(entries []Entry) ([]Entry, error) {
	for i := range entries {
		e := &entries[i]
		if !validToken(e.Token) {
			return nil, fmt.Errorf("%s: the token is not a bearer token (RFC 6750 b64token: [A-Za-z0-9-._~+/]+ then any =)", e.where)
		}
		if !validCaller(e.Caller.Name) {
			return nil, fmt.Errorf("%s: caller %q is not 1 to 128 characters of [A-Za-z0-9._@-]", e.where, e.Caller.Name)
		}
		if len(e.Caller.Scopes) == 0 {
			e.Caller.Scopes = slices.Clone(allScopes)
		}
	}
	return entries, nil
}

func addScope(c *Caller, s string) error {
	s = strings.TrimSpace(s)
	if !slices.Contains(allScopes, s) {
		return fmt.Errorf("scope %q is not one of %s", s, strings.Join(allScopes, ", "))
	}
	if !c.Can(s) {
		c.Scopes = append(c.Scopes, s)
	}
	return nil
}

// validToken reports whether s is an RFC 6750 b64token.
func validToken(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for _, c := range []byte(body) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}

func validCaller(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '@' || c == '-') {
			return false
		}
	}
	return true
}

// BearerToken returns the token of an Authorization header value
// ("Bearer <token>", scheme case-insensitive); ok is false when it is not one.
func BearerToken(authorization string) (token string, ok bool) {
	scheme, token, found := strings.Cut(strings.TrimSpace(authorization), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
