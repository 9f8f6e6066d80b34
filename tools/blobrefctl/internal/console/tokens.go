package console

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
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
		if why := weakness(token); why != "" {
			return fmt.Errorf("%s: the token %s", where, why)
		}
		k := sha256.Sum256([]byte(token))
		if _, dup := t.by[k]; dup {
			return fmt.Errorf("%s: the token is configured twice", where)
		}
		t.by[k] = o
		return nil
	}
	// An element with "=" starts an entry; those after it, up to the next
	// such element, continue its scope list.
	var entries [][]string
	for elem := range strings.SplitSeq(list, ",") {
		switch elem = strings.TrimSpace(elem); {
		case elem == "":
		case strings.Contains(elem, "="):
			entries = append(entries, []string{elem})
		case len(entries) == 0:
			return nil, errors.New("CONSOLE_TOKENS: entries are token=name[:scopes]")
		default:
			entries[len(entries)-1] = append(entries[len(entries)-1], elem)
		}
	}
	for n, e := range entries {
		entry := strings.Join(e, ",")
		i := strings.LastIndexByte(e[0], '=')
		name, scopes, _ := strings.Cut(entry[i+1:], ":")
		if err := add(fmt.Sprintf("CONSOLE_TOKENS entry %d", n+1), entry[:i], name, scopes); err != nil {
			return nil, err
		}
	}
	if file != "" {
		f, err := os.Open(file) // #nosec G304 -- CONSOLE_TOKENS_FILE, the file its operator configured
		if err != nil {
			return nil, fmt.Errorf("CONSOLE_TOKENS_FILE: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for line := 1; sc.Scan(); line++ {
			text := strings.TrimSpace(sc.Text())
			if text == "" || strings.HasPrefix(text, "#") {
				continue
			}
			where := fmt.Sprintf("CONSOLE_TOKENS_FILE %s:%d", file, line)
			fields := append(strings.Fields(text), "")
			if len(fields) < 3 || len(fields) > 4 {
				return nil, fmt.Errorf("%s: want \"token name [scopes]\"", where)
			}
			if err := add(where, fields[0], fields[1], fields[2]); err != nil {
				return nil, err
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("CONSOLE_TOKENS_FILE: %w", err)
		}
	}
	if len(t.by) == 0 {
		return nil, errors.New("no console tokens: set CONSOLE_TOKENS_FILE (or --tokens-file) or CONSOLE_TOKENS")
	}
	return t, nil
}

// operator parses a name and its comma-separated scopes.
func operator(name, scopes string) (Operator, error) {
	if !validName(name) {
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

func validName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._@-", c) >= 0) {
			return false
		}
	}
	return true
}

// minTokenLen and minDistinct are what a token needs to count as random:
// ingest asks the same of its own.
const (
	minTokenLen = 32
	minDistinct = 8
)

// placeholders are what examples put where a token goes.
var placeholders = []string{
	"change-me", "changeme", "change_me", "replace-me", "replaceme", "replace_me",
	"your-token", "yourtoken", "your_token", "placeholder", "example", "dev-token",
}

// weakness says why token is too weak to serve with, or "".
func weakness(token string) string {
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return "is empty or holds white space"
	}
	lower := strings.ToLower(token)
	for _, p := range placeholders {
		if strings.Contains(lower, p) {
			return "is a known placeholder"
		}
	}
	if len(token) < minTokenLen {
		return fmt.Sprintf("is shorter than %d characters", minTokenLen)
	}
	seen := map[rune]bool{}
	for _, r := range token {
		seen[r] = true
	}
	if len(seen) < minDistinct {
		return fmt.Sprintf("has fewer than %d distinct characters", minDistinct)
	}
	return ""
}
