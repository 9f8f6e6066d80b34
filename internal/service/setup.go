package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// SetupConfig is what `blobrefctl setup` reads, with the names the services
// read: the streams' settings (STREAM_*, DLQ_MAX_AGE), the staging bucket's
// (STAGING_*) and the consumers' (CONSUMER_ACK_WAIT and
// CONSUMER_MAX_IN_FLIGHT shape the durable consumers; a consumer service
// with NATS_SETUP=off waits until its consumer has its settings).
type SetupConfig struct {
	Config
	ConsumerConfig
	StagingConfig
}

// Validate names each bad setting.
func (c *SetupConfig) Validate() error {
	return errors.Join(c.Config.Validate(), c.ConsumerConfig.Validate(), c.StagingConfig.Validate())
}

// Consumers are the pipeline's durable consumers, each read by the step
// runners of one service.
var Consumers = []events.ConsumerSpec{events.BlobWriterConsumer, events.RefWriterConsumer}

// Setup creates, or updates to what c describes, everything the services
// look up with NATS_SETUP=off: the streams UPLOADS and UPLOADS_DLQ, the
// staging bucket and the durable consumers (after the streams: they live
// in UPLOADS). It is idempotent, and returns a line on each.
func Setup(ctx context.Context, js jetstream.JetStream, c *SetupConfig) ([]string, error) {
	var done []string
	o := c.StreamOptions()
	if err := events.EnsureStreams(ctx, js, o); err != nil {
		return done, err
	}
	for _, s := range []jetstream.StreamConfig{events.StreamConfig(o), events.DLQStreamConfig(o)} {
		done = append(done, fmt.Sprintf("stream %s: subjects %s, replicas %d, max age %s", s.Name, s.Subjects[0], s.Replicas, s.MaxAge))
	}
	bucket := StagingBucketConfig(c.StagingBucket, c.StagingTTL, c.StreamReplicas, c.StagingMaxBytes)
	if _, err := js.CreateOrUpdateObjectStore(ctx, bucket); err != nil {
		return done, fmt.Errorf("staging bucket %s: %w", bucket.Bucket, err)
	}
	done = append(done, fmt.Sprintf("object store %s: ttl %s, replicas %d, max bytes %d", bucket.Bucket, bucket.TTL, bucket.Replicas, bucket.MaxBytes))
	for _, spec := range Consumers {
		cc := step.DurableConfig(spec, c.RunnerOptions())
		if _, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, cc); err != nil {
			return done, fmt.Errorf("consumer %s: %w", spec.Durable, err)
		}
		done = append(done, fmt.Sprintf("consumer %s on %s: filter %s, ack wait %s, max ack pending %d",
			cc.Durable, events.StreamName, cc.FilterSubject, cc.AckWait, cc.MaxAckPending))
	}
	return done, nil
}
