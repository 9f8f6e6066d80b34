package events_test

import (
	"testing"

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
