// Command blobwriter is the pipeline's first consumer: it streams each
// requested upload into the blob store at BLOB_URL and publishes
// uploads.blob.stored.<id>.
package main

import (
	"context"
	"errors"
	"log/slog"
	"net/url"

	"gocloud.dev/blob"

	_ "github.com/blobref/blobref/internal/blobdrivers"
	"github.com/blobref/blobref/internal/service"
	"github.com/blobref/blobref/internal/steprun"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/blobwriter/internal/blobstore"
)

type config struct {
	service.Config
	service.ConsumerConfig
	// BlobURL is the gocloud.dev bucket URL uploads are stored in.
	BlobURL string `env:"BLOB_URL" envDefault:"file:///var/lib/blobref/blobs?create_dir=true"`
	// BlobKeyPrefix is prepended to the upload id to form the object key.
	BlobKeyPrefix string `env:"BLOB_KEY_PREFIX" envDefault:"uploads/"`
}

func (c *config) Validate() error {
	var errs []error
	if _, err := url.Parse(c.BlobURL); err != nil || c.BlobURL == "" {
		errs = append(errs, errors.New("config: BLOB_URL: must be a gocloud.dev bucket URL"))
	}
	return errors.Join(append(errs, c.Config.Validate(), c.ConsumerConfig.Validate())...)
}

func main() {
	service.Main("blobwriter", &config{Config: service.Config{MetricsAddr: ":9101"}}, run)
}

func run(ctx context.Context, cfg *config, log *slog.Logger) error {
	bucket, err := blob.OpenBucket(ctx, cfg.BlobURL)
	if err != nil {
		return err
	}
	defer bucket.Close()
	log.Info("bucket opened", "blob_url", redact(cfg.BlobURL))
	return service.RunStep(ctx, "blobwriter", &cfg.Config, &cfg.ConsumerConfig, log,
		func(d service.Deps) (steprun.Step[events.Blob], error) {
			w := &blobstore.Writer{Bucket: bucket, Claims: blobstore.ObjectClaims{JS: d.JS}, KeyPrefix: cfg.BlobKeyPrefix}
			return w.Step(), nil
		})
}

// redact drops credentials a bucket URL may carry.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable)"
	}
	return u.Redacted()
}
