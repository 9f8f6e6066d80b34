package console

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/blobref/blobref/internal/bearer"
)

// Scopes a console token can grant.
const (
	// ScopeRead allows every page: uploads, consumers, dead letters.
	ScopeRead = "read"
	// ScopeOperate allows re-driving dead letters.
	ScopeOperate = "operate"
)

var allScopes = []string{ScopeRead, ScopeOperate}

// Operator is who a token stands for, and what it may do.
type Operator struct {
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
}

// Can reports whether o holds scope.
func (o Operator) Can(scope string) bool { return slices.Contains(o.Scopes, scope) }

// Tokens authenticates the console's bearer tokens.
type Tokens struct {
	// by is keyed by the token's SHA-256, so that a lookup's timing says
	// nothing about how much of a guess matched.
	by map[[sha256.Size]byte]Operator
}

// Authenticate returns the operator token belongs to.
func (t *Tokens) Authenticate(token string) (Operator, bool) {
	o, ok := t.by[sha256.Sum256([]byte(token))]
	return o, ok
}

// Len is the number of tokens.
func (t *Tokens) Len() int { return len(t.by) }

// LoadTokens reads the console's tokens as ingest reads its own: list in the
// CONSOLE_TOKENS format, comma-separated "token=name[:scopes]" entries
// (name:read,operate), and, unless file is "", the
// CONSOLE_TOKENS_FILE format, one "token name [scopes]" per line with
// scopes comma-separated, blank lines and lines starting with # ignored.
// Scopes are read and operate; none, or "*", is both. A token must be
// strong: at least 32 characters, 8 of them distinct, and no placeholder
// (CHANGE-ME, dev-token, ...). Errors never repeat a token.
func LoadTokens(list, file string) (*Tokens, error) {
	t := &Tokens{by: map[[sha256.Size]byte]Operator{}}
	add := func(where, token, name, scopes string) error {
		o, err := operator(name, scopes)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if why := bearer.Weakness(token); why != "" {
			return fmt.Errorf("%s: the token %s", where, why)
		}
		k := sha256.Sum256([]byte(token))
		if _, dup := t.by[k]; dup {
			return fmt.Errorf("%s: the token is configured twice", where)
		}
		t.by[k] = o
		return nil
	}
	entries, ok := bearer.SplitList(list)
	if !ok {
		return nil, errors.New("CONSOLE_TOKENS: entries are token=name[:scopes]")
	}
	for n, e := range entries {
		name, scopes, _ := strings.Cut(e.Value, ":")
		if err := add(fmt.Sprintf("CONSOLE_TOKENS entry %d", n+1), e.Token, name, scopes); err != nil {
			return nil, err
		}
	}
	if file != "" {
		err := bearer.ReadFile(file, func(where string, fields []string) error {
			where = "CONSOLE_TOKENS_FILE " + where
			if len(fields) < 2 || len(fields) > 3 {
				return fmt.Errorf("%s: want \"token name [scopes]\"", where)
			}
			fields = append(fields, "")
			return add(where, fields[0], fields[1], fields[2])
		})
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("CONSOLE_TOKENS_FILE: %w", err)
		}
		if err != nil {
			return nil, err
		}
	}
	if len(t.by) == 0 {
		return nil, errors.New("no console tokens: set CONSOLE_TOKENS_FILE (or --tokens-file) or CONSOLE_TOKENS")
	}
	return t, nil
}

// operator parses a name and its comma-separated scopes.
func operator(name, scopes string) (Operator, error) {
	if !bearer.ValidName(name) {
		return Operator{}, errors.New("the name is not 1 to 128 characters of [A-Za-z0-9._@-]")
	}
	o := Operator{Name: name}
	if scopes = strings.TrimSpace(scopes); scopes == "" || scopes == "*" {
		o.Scopes = slices.Clone(allScopes)
		return o, nil
	}
	for i, s := range strings.Split(scopes, ",") {
		if !slices.Contains(allScopes, s) {
			return Operator{}, fmt.Errorf("scope %d: not one of %s", i+1, strings.Join(allScopes, ", "))
		}
		if !o.Can(s) {
			o.Scopes = append(o.Scopes, s)
		}
	}
	return o, nil
}
