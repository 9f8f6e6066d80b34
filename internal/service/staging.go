package service

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
)

// StagingConfig names the JetStream Object Store bucket that large upload
// bodies are claim-checked in. ingest writes it; ingest (NATS_SETUP=auto)
// or blobrefctl setup creates it, with StagingBucketConfig.
type StagingConfig struct {
	// StagingBucket is the bucket's name.
	StagingBucket string `env:"STAGING_BUCKET" envDefault:"uploads-staging"`
	// StagingTTL is how long staged bodies are kept: well beyond the
	// pipeline's retry horizon.
	StagingTTL time.Duration `env:"STAGING_TTL" envDefault:"72h"`
}

// Validate names each bad setting.
func (c *StagingConfig) Validate() error {
	var errs []error
	if !events.ValidBucket(c.StagingBucket) {
		errs = append(errs, fmt.Errorf("config: STAGING_BUCKET: %q is not a bucket name ([A-Za-z0-9_-]+)", c.StagingBucket))
	}
	if c.StagingTTL <= 0 {
		errs = append(errs, errors.New("config: STAGING_TTL: must be positive"))
	}
	return errors.Join(errs...)
}

// StagingBucketConfig is the staging bucket named bucket whose objects
// expire after ttl, on replicas servers.
func StagingBucketConfig(bucket string, ttl time.Duration, replicas int) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "blobref ingest: claim-checked upload bodies",
		TTL:         ttl,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	}
}
