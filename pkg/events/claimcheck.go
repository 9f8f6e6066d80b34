package events

import (
	"fmt"
	"net/url"
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
