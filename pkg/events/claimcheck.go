package events

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
)

// ObjectRefScheme is the URI scheme of a dataref naming an object in a
// JetStream Object Store bucket: nats-object://<bucket>/<object name>.
const ObjectRefScheme = "nats-object"

// ObjectRef returns the dataref of object name in Object Store bucket.
func ObjectRef(bucket, name string) string {
	return ObjectRefScheme + "://" + bucket + "/" + name
}

// ParseObjectRef splits a nats-object://<bucket>/<name> dataref.
func ParseObjectRef(ref string) (bucket, name string, err error) {
	u, err := url.Parse(ref)
	if err != nil || u.Scheme != ObjectRefScheme || !ValidBucket(u.Host) || len(u.Path) < 2 {
		return "", "", fmt.Errorf("dataref %q is not %s://<bucket>/<name>", ref, ObjectRefScheme)
	}
	return u.Host, u.Path[1:], nil
}

// ValidBucket reports whether name can name an Object Store bucket
// ([A-Za-z0-9_-]+); JetStream refuses any other.
func ValidBucket(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ObjectDigest decodes the digest an Object Store bucket records of an
// object, "SHA-256=" and the base64url SHA-256 of its bytes, into that
// SHA-256; ok is false for a digest of any other form. The staging writer
// and the claim-check reader both read digests with it.
func ObjectDigest(digest string) (sum []byte, ok bool) {
	enc, ok := strings.CutPrefix(digest, "SHA-256=")
	if !ok {
		return nil, false
	}
	sum, err := base64.URLEncoding.DecodeString(enc)
	if err != nil { // a writer that left the padding out
		sum, err = base64.RawURLEncoding.DecodeString(enc)
	}
	return sum, err == nil && len(sum) == sha256.Size
}
