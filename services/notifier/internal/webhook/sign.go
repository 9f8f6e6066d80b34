package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The headers of a signed request (Standard Webhooks 1.0).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// secretPrefix marks a symmetric signing secret: "whsec_" and the base64 of
// its bytes.
const secretPrefix = "whsec_"

// Secret is an endpoint's symmetric signing key.
type Secret []byte

// ParseSecret reads a "whsec_<base64>" secret of 24 to 64 bytes, as the
// specification wants them.
func ParseSecret(s string) (Secret, error) {
	enc, ok := strings.CutPrefix(strings.TrimSpace(s), secretPrefix)
	if !ok {
		return nil, errors.New(`a secret starts with "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("a secret is whsec_ and base64: %w", err)
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("a secret is 24 to 64 bytes, not %d", len(key))
	}
	return Secret(key), nil
}

// String returns the secret as "whsec_<base64>".
func (s Secret) String() string { return secretPrefix + base64.StdEncoding.EncodeToString(s) }

// Sign returns the v1 signature of a message: "v1," and the base64
// HMAC-SHA256, under the secret, of "<id>.<timestamp>.<body>".
func (s Secret) Sign(id string, ts time.Time, body []byte) string {
	mac := hmac.New(sha256.New, s)
	mac.Write([]byte(id + "." + strconv.FormatInt(ts.Unix(), 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Signature is the webhook-signature header of a message signed with each
// of secrets: their signatures, space-separated (a rotated secret signs
// beside its successor until receivers have the new one).
func Signature(secrets []Secret, id string, ts time.Time, body []byte) string {
	sigs := make([]string, len(secrets))
	for i, s := range secrets {
		sigs[i] = s.Sign(id, ts, body)
	}
	return strings.Join(sigs, " ")
}

// MessageID is the webhook-id of the delivery of upload to endpoint: the
// same at every attempt, so that a receiver can drop a delivery it already
// processed (a crash between its 2xx and the notifier's record sends it
// again), and different for each endpoint. It holds no ".", which the
// signed content uses as its separator.
func MessageID(upload, endpoint string) string {
	sum := sha256.Sum256([]byte("blobref-webhook\x00" + endpoint + "\x00" + upload))
	return "msg_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:20]))
}
