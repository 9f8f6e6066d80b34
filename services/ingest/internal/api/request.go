package api

import (
	"errors"
	"fmt"
	"mime"
	"strconv"
	"strings"
	"time"

	"github.com/blobref/blobref/pkg/events"
)

// maxKeyLen is the longest Idempotency-Key accepted.
const maxKeyLen = 255

// parseKey reads an Idempotency-Key header value: an RFC 8941 string
// ("...", as the IETF draft defines it) or, as many clients send it, the
// bare characters. 1 to 255 printable ASCII characters.
func parseKey(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", invalid("Idempotency-Key", "required: one key per upload, the same for every retry")
	case 1:
	default:
		return "", invalid("Idempotency-Key", "given more than once")
	}
	v := strings.TrimSpace(values[0])
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		var b strings.Builder
		for i := 1; i < len(v)-1; i++ {
			c := v[i]
			switch c {
			case '\\':
				i++
				if i == len(v)-1 || (v[i] != '"' && v[i] != '\\') {
					return "", invalid("Idempotency-Key", "bad escape in a quoted key")
				}
				c = v[i]
			case '"':
				return "", invalid("Idempotency-Key", "unescaped quote in a quoted key")
			}
			b.WriteByte(c)
		}
		v = b.String()
	}
	if v == "" {
		return "", invalid("Idempotency-Key", "empty")
	}
	if len(v) > maxKeyLen {
		return "", invalid("Idempotency-Key", fmt.Sprintf("longer than %d characters", maxKeyLen))
	}
	for _, c := range []byte(v) {
		if c < 0x20 || c > 0x7e {
			return "", invalid("Idempotency-Key", "only printable ASCII characters are allowed")
		}
	}
	return v, nil
}

// checkSubject checks the subject query parameter against the event
// contract (events.CheckSubject), as the request event will be checked.
func checkSubject(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", invalid("subject", "required: what the upload belongs to, e.g. users/42/avatar")
	case 1:
	default:
		return "", invalid("subject", "given more than once")
	}
	if err := events.CheckSubject(values[0]); err != nil {
		if ie, ok := errors.AsType[*events.InvalidError](err); ok {
			return "", invalid("subject", ie.Msg)
		}
		return "", invalid("subject", "not acceptable")
	}
	return values[0], nil
}

// MediaTypes is an allow-list of media types: "type/subtype", "type/*" or
// "*/*".
type MediaTypes []string

// ParseMediaTypes parses an allow-list.
func ParseMediaTypes(list []string) (MediaTypes, error) {
	out := make(MediaTypes, 0, len(list))
	for _, s := range list {
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" {
			continue
		}
		typ, sub, ok := strings.Cut(s, "/")
		wild := strings.Contains(typ, "*") || strings.Contains(sub, "*")
		if !ok || typ == "" || sub == "" || wild && sub != "*" || strings.Contains(typ, "*") && typ != "*" {
			return nil, fmt.Errorf("%q is not type/subtype, type/* or */*", s)
		}
		if _, _, err := mime.ParseMediaType(strings.ReplaceAll(s, "*", "x")); err != nil {
			return nil, fmt.Errorf("%q is not a media type", s)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no media types")
	}
	return out, nil
}

// Allows reports whether the media type mt (lower case, no parameters) is
// on the list.
func (m MediaTypes) Allows(mt string) bool {
	typ, sub, ok := strings.Cut(mt, "/")
	if !ok || typ == "" || sub == "" {
		return false // a type without a subtype is no media type
	}
	for _, a := range m {
		if a == "*/*" || a == mt || (strings.HasSuffix(a, "/*") && a[:len(a)-2] == typ) {
			return true
		}
	}
	return false
}

// checkContentType parses the Content-Type header and checks it against
// the allow-list and the event contract (events.CheckContentType: its
// length and characters). It returns the media type normalised
// (lower-case type, parameters kept): what is recorded and sent.
func (m MediaTypes) checkContentType(value string) (string, error) {
	if strings.TrimSpace(value) == "" {
		return "", &mediaTypeError{allowed: m}
	}
	mt, params, err := mime.ParseMediaType(value)
	if err != nil || !m.Allows(mt) {
		return "", &mediaTypeError{contentType: value, allowed: m}
	}
	ct := mt
	if f := mime.FormatMediaType(mt, params); f != "" {
		ct = f
	}
	if err := events.CheckContentType(ct); err != nil {
		why := "not acceptable"
		if ie, ok := errors.AsType[*events.InvalidError](err); ok {
			why = ie.Msg
		}
		return "", &mediaTypeError{contentType: value, allowed: m, rule: why}
	}
	return ct, nil
}

// parseWait reads the wait preference of Prefer headers (RFC 7240, e.g.
// "respond-async, wait=10"), capped at max. ok is false when there is none
// or it cannot be read: a preference the server does not understand is
// ignored.
func parseWait(values []string, max time.Duration) (time.Duration, bool) {
	if max <= 0 {
		return 0, false
	}
	for _, v := range values {
		for pref := range strings.SplitSeq(v, ",") {
			pref, _, _ = strings.Cut(pref, ";")
			name, val, ok := strings.Cut(strings.TrimSpace(pref), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(val), `"`))
			if err != nil || n <= 0 {
				return 0, false
			}
			n = min(n, 1<<31) // no overflow below
			return min(time.Duration(n)*time.Second, max), true
		}
	}
	return 0, false
}
