package auth

import (
	"errors"
	"fmt"
	"strings"
)

// MinTokenLen is the shortest token ingest serves with: 32 characters of a
// b64token carry well over 128 bits when they are random.
const MinTokenLen = 32

// minDistinct is the fewest distinct characters a token may have: fewer is
// a pattern ("aaaa...", "0101..."), not a random string.
const minDistinct = 8

// placeholders are what example configurations and READMEs put where a
// token goes; a token holding one (any case) was copied, not generated.
var placeholders = []string{
	"change-me", "changeme", "change_me", "replace-me", "replaceme", "replace_me",
	"your-token", "yourtoken", "your_token", "placeholder", "example", "dev-token",
}

// weakness says why token is too weak to serve with, or "" when it is not:
// it does not repeat the token.
func weakness(token string) string {
	lower := strings.ToLower(token)
	for _, p := range placeholders {
		if strings.Contains(lower, p) {
			return "is a known placeholder"
		}
	}
	if len(token) < MinTokenLen {
		return fmt.Sprintf("is shorter than %d characters", MinTokenLen)
	}
	seen := map[byte]bool{}
	for i := 0; i < len(token); i++ {
		seen[token[i]] = true
	}
	if len(seen) < minDistinct {
		return fmt.Sprintf("has fewer than %d distinct characters", minDistinct)
	}
	return ""
}

// Weak returns an error naming where each weak token is configured, and
// why it is weak (shorter than MinTokenLen, a known placeholder such as
// CHANGE-ME or dev-token, or too few distinct characters), or nil when
// there is none. It never repeats a token. ingest refuses to start with a
// weak token unless told it runs on a development machine.
func (t *Tokens) Weak() error {
	return errors.Join(t.weak...)
}
