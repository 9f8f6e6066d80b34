// Package claimcheck is blobref's claim check: large upload bodies staged
// in a JetStream Object Store bucket by ingest and read back by blobwriter.
// The writer (Staging), the reader (ObjectClaims.Open) and the deletion
// (ObjectClaims.Delete) live here side by side, with the one definition of
// the bucket's layout they share. The services keep only their own
// concerns: ingest the HTTP body, quota and lease; blobwriter the step.
package claimcheck

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The layout of an Object Store bucket (NATS ADR-20): bucket B is stream
// OBJ_B; the chunks of the object instance with NUID N are the messages on
// $O.B.C.N, in order; its info (size, chunk count, digest) is the last
// message on its meta subject, $O.B.M.<base64url (padded) object name>,
// read by ObjectStore.GetInfo.

// streamName is the stream behind bucket.
func streamName(bucket string) string { return "OBJ_" + bucket }

// chunkSubject is the subject of the chunks of the object instance nuid.
func chunkSubject(bucket, nuid string) string { return "$O." + bucket + ".C." + nuid }

// fenceSubject is the subject of the fence of the staged object named
// name (see stageWriter): one small message, the claim of the writer
// session that owns the object. It is one token under C, as chunk
// subjects are, and never one of theirs: a staged object's nuid starts
// "staged-", a NATS nuid has no dash.
func fenceSubject(bucket, name string) string { return chunkSubject(bucket, "fence-"+name) }

// MetaSubject is the subject of the info of the object named name.
func MetaSubject(bucket, name string) string {
	return "$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
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

// BucketConfig is the staging bucket named bucket whose objects expire
// after ttl, on replicas servers, storing at most maxBytes (0 or less: no
// bound). ingest (NATS_SETUP=auto) and blobrefctl setup create it with it.
func BucketConfig(bucket string, ttl time.Duration, replicas int, maxBytes int64) jetstream.ObjectStoreConfig {
	if maxBytes <= 0 {
		maxBytes = -1
	}
	return jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "blobref ingest: claim-checked upload bodies",
		TTL:         ttl,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
		MaxBytes:    maxBytes,
	}
}
