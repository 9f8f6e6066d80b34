package auth

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/blobref/blobref/internal/bearer"
	"github.com/blobref/blobref/pkg/events"
)

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

// ParseList parses the AUTH_TOKENS format.
func ParseList(s string) ([]Entry, error) {
	list, ok := bearer.SplitList(s)
	if !ok {
		return nil, errors.New("AUTH_TOKENS: entries are token=caller[:scopes[:prefixes]]")
	}
	out := make([]Entry, 0, len(list))
	for n, le := range list {
		e := Entry{Token: le.Token, where: fmt.Sprintf("AUTH_TOKENS entry %d", n+1)}
		caller, rest, _ := strings.Cut(le.Value, ":")
		scopes, prefixes, _ := strings.Cut(rest, ":")
		e.Caller.Name = caller
		if err := setLists(&e.Caller, scopes, prefixes); err != nil {
			return nil, fmt.Errorf("%s: %w", e.where, err)
		}
		out = append(out, e)
	}
	return finish(out)
}

// ReadFile parses an AUTH_TOKENS_FILE.
func ReadFile(path string) ([]Entry, error) {
	var out []Entry
	err := bearer.ReadFile(path, func(where string, fields []string) error {
		e := Entry{where: "AUTH_TOKENS_FILE " + where}
		if len(fields) < 2 || len(fields) > 4 {
			return fmt.Errorf("%s: want \"token caller [scopes [prefixes]]\"", e.where)
		}
		fields = append(fields, "", "")
		e.Token, e.Caller.Name = fields[0], fields[1]
		if err := setLists(&e.Caller, fields[2], fields[3]); err != nil {
			return fmt.Errorf("%s: %w", e.where, err)
		}
		out = append(out, e)
		return nil
	})
	if pe := (*os.PathError)(nil); errors.As(err, &pe) {
		return nil, fmt.Errorf("AUTH_TOKENS_FILE: %w", err)
	}
	if err != nil {
		return nil, err
	}
	return finish(out)
}

// setLists sets the scopes and prefixes of c from their comma-separated
// lists. An empty scope list or "*" is every scope.
func setLists(c *Caller, scopes, prefixes string) error {
	if scopes = strings.TrimSpace(scopes); scopes != "" && scopes != "*" {
		for i, s := range strings.Split(scopes, ",") {
			if err := addScope(c, s); err != nil {
				return fmt.Errorf("scope %d: %w", i+1, err)
			}
		}
	}
	if prefixes = strings.TrimSpace(prefixes); prefixes == "" {
		return nil
	}
	for i, p := range strings.Split(prefixes, ",") {
		p = strings.TrimSpace(p)
		if err := events.CheckSubject(p); err != nil {
			// The contract's message says what is wrong, not what was given.
			return fmt.Errorf("subject prefix %d is not a subject: %w", i+1, err)
		}
		if !slices.Contains(c.Prefixes, p) {
			c.Prefixes = append(c.Prefixes, p)
		}
	}
	return nil
}

// finish checks the entries and gives scopeless ones every scope.
func finish(entries []Entry) ([]Entry, error) {
	for i := range entries {
		e := &entries[i]
		if !validToken(e.Token) {
			return nil, fmt.Errorf("%s: the token is not a bearer token (RFC 6750 b64token: [A-Za-z0-9-._~+/]+ then any =)", e.where)
		}
		if !bearer.ValidName(e.Caller.Name) {
			return nil, fmt.Errorf("%s: the caller is not 1 to 128 characters of [A-Za-z0-9._@-]", e.where)
		}
		if len(e.Caller.Scopes) == 0 {
			e.Caller.Scopes = slices.Clone(allScopes)
		}
	}
	return entries, nil
}

// addScope adds scope s to c. Its error does not quote s: a misplaced comma
// can make a token look like a scope.
func addScope(c *Caller, s string) error {
	s = strings.TrimSpace(s)
	if !slices.Contains(allScopes, s) {
		return fmt.Errorf("not one of %s", strings.Join(allScopes, ", "))
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

// BearerToken returns the token of an Authorization header value
// ("Bearer <token>", scheme case-insensitive); ok is false when it is not one.
var BearerToken = bearer.FromHeader
