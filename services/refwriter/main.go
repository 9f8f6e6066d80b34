// Command refwriter is the pipeline's second consumer: for each stored blob
// it records the reference in Postgres (in one transaction with its marker
// and the subject's current reference) and publishes
// uploads.completed.<id>.
package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"gocloud.dev/blob"

	_ "github.com/blobref/blobref/internal/blobdrivers"
	"github.com/blobref/blobref/internal/dbschema"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/stepservice"
	"github.com/blobref/blobref/services/refwriter/internal/refstore"
)

type config struct {
	stepservice.Config
	stepservice.ConsumerConfig
	// BlobURL is the bucket blobwriter stores in; refwriter checks each blob
	// there before referencing it.
	BlobURL string `env:"BLOB_URL" envDefault:"file:///var/lib/blobref/blobs?create_dir=true"`
	// BlobCheck false skips that check: for a bucket refwriter cannot see,
	// such as blobwriter's mem://. (An empty BLOB_URL cannot say it: the
	// environment parser replaces an empty value by the default.)
	BlobCheck bool `env:"BLOB_CHECK" envDefault:"true"`
	// BlobKeyPrefix is blobwriter's object key prefix: refwriter refuses a
	// blob_stored event whose key is not this prefix and the upload id.
	BlobKeyPrefix string `env:"BLOB_KEY_PREFIX" envDefault:"uploads/"`
	// MaxClockSkew is how far in the future an event's time may lie; a
	// later one is dead-lettered as invalid.
	MaxClockSkew time.Duration `env:"MAX_CLOCK_SKEW" envDefault:"5m"`
}

// defaults is the configuration before the environment is read.
func defaults() *config {
	return &config{Config: stepservice.Config{MetricsAddr: ":9102", GCMinHeap: stepservice.DefaultGCMinHeap}}
}

func (c *config) Validate() error {
	var errs []error
	if c.MaxClockSkew <= 0 {
		errs = append(errs, errors.New("config: MAX_CLOCK_SKEW: must be positive"))
	}
	return errors.Join(append(errs, c.Config.Validate(), c.ConsumerConfig.Validate())...)
}

func main() {
	stepservice.Main("refwriter", defaults(), run)
}

func run(ctx context.Context, cfg *config, log *slog.Logger) error {
	w := &refstore.Writer{KeyPrefix: cfg.BlobKeyPrefix, MaxClockSkew: cfg.MaxClockSkew}
	if cfg.BlobCheck {
		bucket, err := blob.OpenBucket(ctx, cfg.BlobURL)
		if err != nil {
			return err
		}
		defer bucket.Close()
		w.Bucket = bucket
	}
	return stepservice.Run(ctx, "refwriter", &cfg.Config, &cfg.ConsumerConfig, log,
		func(stepservice.Deps) (step.Step[events.Reference], error) { return w.Step(), nil },
		stepservice.WithMigrate(dbschema.Migrate))
}
