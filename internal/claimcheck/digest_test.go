package claimcheck_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/internal/testenv"
)

// ObjectDigest reads the digest a JetStream Object Store records (stored
// here on a real server), and no digest of another form.
func TestObjectDigest(t *testing.T) {
	t.Parallel()
	_, js := testenv.StartNATS(t).Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "digests"})
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("staged bytes")
	info, err := store.PutBytes(ctx, "obj", data)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	if got, ok := claimcheck.ObjectDigest(info.Digest); !ok || !bytes.Equal(got, want[:]) {
		t.Fatalf("ObjectDigest(%q): got %x, %v; want %x, true", info.Digest, got, ok, want)
	}
	unpadded := "SHA-256=" + base64.RawURLEncoding.EncodeToString(want[:])
	if got, ok := claimcheck.ObjectDigest(unpadded); !ok || !bytes.Equal(got, want[:]) {
		t.Errorf("ObjectDigest(%q): got %x, %v; want %x, true", unpadded, got, ok, want)
	}
	short := sha256.Sum224(data)
	for _, d := range []string{
		"", "SHA-256=", strings.Replace(info.Digest, "SHA-256=", "MD5=", 1), strings.TrimPrefix(info.Digest, "SHA-256="),
		"SHA-256=" + base64.URLEncoding.EncodeToString(short[:]), "SHA-256=not base64!",
	} {
		if got, ok := claimcheck.ObjectDigest(d); ok {
			t.Errorf("ObjectDigest(%q): got %x, true; want false", d, got)
		}
	}
}
