package events_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
)

func TestParseObjectRef(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ref          string
		bucket, name string // both empty: an error is wanted
	}{
		{"nats-object://uploads-staging/abc", "uploads-staging", "abc"},
		{"nats-object://Uploads_Staging-2/abc", "Uploads_Staging-2", "abc"},
		{"nats-object://b/dir/name.bin", "b", "dir/name.bin"},
		{"nats-object://b/with%20space", "b", "with space"},
		{"", "", ""},
		{"uploads-staging/abc", "", ""},
		{"s3://uploads-staging/abc", "", ""},
		{"nats-object:uploads-staging/abc", "", ""},
		{"nats-object://uploads-staging", "", ""},
		{"nats-object://uploads-staging/", "", ""},
		{"nats-object:///abc", "", ""},
		{"nats-object://bad bucket/abc", "", ""},
		{"nats-object://%zz/abc", "", ""},
		// Object Store bucket names are [A-Za-z0-9_-]+: anything else can
		// never name a bucket, so it is malformed, not missing.
		{"nats-object://uploads.staging/abc", "", ""},
		{"nats-object://uploads-staging:4222/abc", "", ""},
	}
	for _, tt := range tests {
		bucket, name, err := events.ParseObjectRef(tt.ref)
		switch {
		case tt.bucket == "" && err == nil:
			t.Errorf("ParseObjectRef(%q): got (%q, %q), want an error", tt.ref, bucket, name)
		case tt.bucket != "" && (err != nil || bucket != tt.bucket || name != tt.name):
			t.Errorf("ParseObjectRef(%q): got (%q, %q, %v), want (%q, %q, nil)", tt.ref, bucket, name, err, tt.bucket, tt.name)
		}
	}
}

func TestObjectRefRoundTrip(t *testing.T) {
	ref := events.ObjectRef("uploads-staging", "abc")
	if ref != "nats-object://uploads-staging/abc" {
		t.Fatalf("ObjectRef: got %q", ref)
	}
	bucket, name, err := events.ParseObjectRef(ref)
	if err != nil || bucket != "uploads-staging" || name != "abc" {
		t.Errorf("ParseObjectRef(%q): got (%q, %q, %v), want (uploads-staging, abc, nil)", ref, bucket, name, err)
	}
	for name, want := range map[string]bool{"uploads-staging": true, "A_b-9": true, "": false, "a.b": false, "a b": false, "a/b": false} {
		if got := events.ValidBucket(name); got != want {
			t.Errorf("ValidBucket(%q): got %v, want %v", name, got, want)
		}
	}
}

// ObjectDigest reads the digest a JetStream Object Store records (stored
// here on a real server), and no digest of another form.
func TestObjectDigest(t *testing.T) {
	t.Parallel()
	_, js := runJetStream(t)
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
	if got, ok := events.ObjectDigest(info.Digest); !ok || !bytes.Equal(got, want[:]) {
		t.Fatalf("ObjectDigest(%q): got %x, %v; want %x, true", info.Digest, got, ok, want)
	}
	unpadded := "SHA-256=" + base64.RawURLEncoding.EncodeToString(want[:])
	if got, ok := events.ObjectDigest(unpadded); !ok || !bytes.Equal(got, want[:]) {
		t.Errorf("ObjectDigest(%q): got %x, %v; want %x, true", unpadded, got, ok, want)
	}
	short := sha256.Sum224(data)
	for _, d := range []string{
		"", "SHA-256=", strings.Replace(info.Digest, "SHA-256=", "MD5=", 1), strings.TrimPrefix(info.Digest, "SHA-256="),
		"SHA-256=" + base64.URLEncoding.EncodeToString(short[:]), "SHA-256=not base64!",
	} {
		if got, ok := events.ObjectDigest(d); ok {
			t.Errorf("ObjectDigest(%q): got %x, true; want false", d, got)
		}
	}
}
