// Command blobwriter is the pipeline's first consumer: it streams each
// requested upload into the blob store at BLOB_URL and publishes
// uploads.blob.stored.<id>.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"gocloud.dev/blob"

	_ "github.com/blobref/blobref/internal/blobdrivers"
	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/internal/dbschema"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/stepservice"
	"github.com/blobref/blobref/services/blobwriter/internal/blobstore"
)

type config struct {
	stepservice.Config
	stepservice.ConsumerConfig
	// BlobURL is the gocloud.dev bucket URL uploads are stored in.
	BlobURL string `env:"BLOB_URL" envDefault:"file:///var/lib/blobref/blobs?create_dir=true"`
	// BlobKeyPrefix is prepended to the upload id to form the object key.
	BlobKeyPrefix string `env:"BLOB_KEY_PREFIX" envDefault:"uploads/"`
	// StagingBucket is the Object Store bucket ingest stages large bodies
	// in; a claim check must name it and the request's own id.
	StagingBucket string `env:"STAGING_BUCKET" envDefault:"uploads-staging"`
	// MaxClockSkew is how far in the future a request's time may lie; a
	// later one is dead-lettered as invalid.
	MaxClockSkew time.Duration `env:"MAX_CLOCK_SKEW" envDefault:"5m"`
}

func (c *config) Validate() error {
	var errs []error
	if _, err := url.Parse(c.BlobURL); err != nil || c.BlobURL == "" {
		errs = append(errs, errors.New("config: BLOB_URL: must be a gocloud.dev bucket URL"))
	}
	if !events.ValidBucket(c.StagingBucket) {
		errs = append(errs, fmt.Errorf("config: STAGING_BUCKET: %q is not a bucket name ([A-Za-z0-9_-]+)", c.StagingBucket))
	}
	if c.MaxClockSkew <= 0 {
		errs = append(errs, errors.New("config: MAX_CLOCK_SKEW: must be positive"))
	}
	return errors.Join(append(errs, c.Config.Validate(), c.ConsumerConfig.Validate())...)
}

func main() {
	stepservice.Main("blobwriter", &config{Config: stepservice.Config{MetricsAddr: ":9101", GCMinHeap: stepservice.DefaultGCMinHeap}}, run)
}

func run(ctx context.Context, cfg *config, log *slog.Logger) error {
	bucket, err := blob.OpenBucket(ctx, cfg.BlobURL)
	if err != nil {
		return err
	}
	defer bucket.Close()
	log.Info("bucket opened", "blob_url", redact(cfg.BlobURL))
	return stepservice.Run(ctx, "blobwriter", &cfg.Config, &cfg.ConsumerConfig, log,
		func(d stepservice.Deps) (step.Step[events.Blob], error) {
			w := &blobstore.Writer{
				Bucket: bucket, Claims: claimcheck.ObjectClaims{JS: d.JS}, KeyPrefix: cfg.BlobKeyPrefix,
				StagingBucket: cfg.StagingBucket, MaxClockSkew: cfg.MaxClockSkew,
			}
			return w.Step(), nil
		}, stepservice.WithMigrate(dbschema.Migrate))
}

// redact drops credentials a bucket URL may carry.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable)"
	}
	return u.Redacted()
}
