// Package bearer is what ingest and the console share about their bearer
// tokens: reading one from an Authorization header, the list and file
// formats they are configured in, the names they stand for, and how strong
// a configured token must be. Its errors and reasons never repeat a token.
package bearer

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// FromHeader returns the token of an Authorization header value
// ("Bearer <token>", scheme case-insensitive); ok is false when it is not
// one.
func FromHeader(authorization string) (token string, ok bool) {
	scheme, token, found := strings.Cut(strings.TrimSpace(authorization), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// Entry is one "token=value" entry of a token list.
type Entry struct {
	Token string
	Value string // what follows the token's "=": a name and its lists
}

// SplitList splits a comma-separated token list ("token=name[:list...]"
// entries) into its entries. An element with "=" starts an entry; an
// element without one continues the entry before it, so that an entry's
// own lists may hold commas. ok is false when the list starts with an
// element without "=". The token is what comes before the last "=" of the
// entry's first element, so a token may end in b64token padding.
func SplitList(list string) (entries []Entry, ok bool) {
	var groups [][]string
	for elem := range strings.SplitSeq(list, ",") {
		switch elem = strings.TrimSpace(elem); {
		case elem == "":
		case strings.Contains(elem, "="):
			groups = append(groups, []string{elem})
		case len(groups) == 0:
			return nil, false
		default:
			groups[len(groups)-1] = append(groups[len(groups)-1], elem)
		}
	}
	entries = make([]Entry, len(groups))
	for n, g := range groups {
		entry := strings.Join(g, ",")
		i := strings.LastIndexByte(g[0], '=')
		entries[n] = Entry{Token: entry[:i], Value: entry[i+1:]}
	}
	return entries, true
}

// ReadFile calls each with the white-space separated fields of every line
// of the tokens file at path, and where it is (path:line); blank lines and
// lines starting with # are skipped. It stops at each's first error.
func ReadFile(path string, each func(where string, fields []string) error) error {
	f, err := os.Open(path) // #nosec G304 -- a tokens file its operator configured
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if err := each(fmt.Sprintf("%s:%d", path, line), strings.Fields(text)); err != nil {
			return err
		}
	}
	return sc.Err()
}

// ValidName reports whether s may name what a token stands for (a caller,
// an operator): 1 to 128 characters of [A-Za-z0-9._@-].
func ValidName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._@-", c) >= 0) {
			return false
		}
	}
	return true
}
