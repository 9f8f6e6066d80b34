package service

import (
	"errors"
	"fmt"
	"time"

	"github.com/blobref/blobref/pkg/events"
)

// StagingConfig names the JetStream Object Store bucket that large upload
// bodies are claim-checked in. ingest writes it; ingest (NATS_SETUP=auto)
// or blobrefctl setup creates it, with claimcheck.BucketConfig.
type StagingConfig struct {
	// StagingBucket is the bucket's name.
	StagingBucket string `env:"STAGING_BUCKET" envDefault:"uploads-staging"`
	// StagingTTL is how long staged bodies are kept: well beyond the
	// pipeline's retry horizon.
	StagingTTL time.Duration `env:"STAGING_TTL" envDefault:"72h"`
	// StagingMaxBytes is the most the bucket stores, in bytes; -1 is no
	// bound. JetStream reserves it in the server's store when it creates
	// the bucket; once full, staging answers 507 until space returns.
	StagingMaxBytes int64 `env:"STAGING_MAX_BYTES" envDefault:"2147483648"`
}

// DefaultStagingMaxBytes is STAGING_MAX_BYTES' default: 2 GiB, twice the
// default MAX_UPLOAD_SIZE, and beside UPLOADS' and UPLOADS_DLQ's default
// bounds within a 4 GB JetStream store.
const DefaultStagingMaxBytes = 2 << 30

// Validate names each bad setting.
func (c *StagingConfig) Validate() error {
	var errs []error
	if !events.ValidBucket(c.StagingBucket) {
		errs = append(errs, fmt.Errorf("config: STAGING_BUCKET: %q is not a bucket name ([A-Za-z0-9_-]+)", c.StagingBucket))
	}
	if c.StagingTTL <= 0 {
		errs = append(errs, errors.New("config: STAGING_TTL: must be positive"))
	}
	if c.StagingMaxBytes == 0 || c.StagingMaxBytes < -1 {
		errs = append(errs, errors.New("config: STAGING_MAX_BYTES: must be positive, or -1 for no bound"))
	}
	return errors.Join(errs...)
}
