package bearer

import (
	"fmt"
	"strings"
)

// MinLen is the shortest token a server serves with: 32 characters of a
// b64token carry well over 128 bits when they are random.
const MinLen = 32

// minDistinct is the fewest distinct characters a token may have: fewer is
// a pattern ("aaaa...", "0101..."), not a random string.
const minDistinct = 8

// placeholders are what example configurations and READMEs put where a
// token goes; a token holding one (any case) was copied, not generated.
var placeholders = []string{
	"change-me", "changeme", "change_me", "replace-me", "replaceme", "replace_me",
	"your-token", "yourtoken", "your_token", "placeholder", "example", "dev-token",
}

// Weakness says why token is too weak to serve with (empty or holding
// white space, a known placeholder such as CHANGE-ME, shorter than MinLen,
// too few distinct characters), or "" when it is not. It does not repeat
// the token.
func Weakness(token string) string {
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return "is empty or holds white space"
	}
	lower := strings.ToLower(token)
	for _, p := range placeholders {
		if strings.Contains(lower, p) {
			return "is a known placeholder"
		}
	}
	if len(token) < MinLen {
		return fmt.Sprintf("is shorter than %d characters", MinLen)
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
