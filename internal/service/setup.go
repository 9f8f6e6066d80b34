// Package service is what only blobref's services share beyond the step
// runtime's service harness (package stepservice): the configuration and
// the work of `blobrefctl setup`, and the staging bucket's.
package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/stepservice"
)

// SetupConfig is what `blobrefctl setup` reads, with the names the services
// read: the streams' settings (STREAM_*, DLQ_MAX_AGE), the staging bucket's
// (STAGING_*) and the consumers' (CONSUMER_ACK_WAIT and
// CONSUMER_MAX_IN_FLIGHT shape the durable consumers; a consumer service
// with NATS_SETUP=off waits until its consumer has its settings).
type SetupConfig struct {
	stepservice.Config
	stepservice.ConsumerConfig
	StagingConfig
}

// Validate names each bad setting.
func (c *SetupConfig) Validate() error {
	return errors.Join(c.Config.Validate(), c.ConsumerConfig.Validate(), c.StagingConfig.Validate())
}

// Consumers are the pipeline's durable consumers, each read by the step
// runners of one service.
var Consumers = []events.ConsumerSpec{events.BlobWriterConsumer, events.RefWriterConsumer, events.NotifierConsumer}

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
	bucket := claimcheck.BucketConfig(c.StagingBucket, c.StagingTTL, c.StreamReplicas, c.StagingMaxBytes)
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
	for _, spec := range events.IngestViewConsumers {
		cc := ViewConsumerConfig(spec)
		if _, err := js.CreateOrUpdateConsumer(ctx, spec.StreamOrDefault(), cc); err != nil {
			return done, fmt.Errorf("consumer %s: %w", spec.Durable, err)
		}
		done = append(done, fmt.Sprintf("consumer %s on %s: filter %s, ack wait %s, max ack pending %d",
			cc.Durable, spec.StreamOrDefault(), cc.FilterSubject, cc.AckWait, cc.MaxAckPending))
	}
	return done, nil
}

// ViewAckWait is how long a read-model consumer's delivery waits for its ack.
const ViewAckWait = 30 * time.Second

// ViewConsumerConfig is the durable consumer of ingest's read model that
// spec names: every message from the stream's start (a new read model
// replays what the stream keeps), explicit acks, and no limit on deliveries:
// a read model records, it never gives up on an event.
func ViewConsumerConfig(spec events.ConsumerSpec) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       spec.Durable,
		Description:   "blobref ingest read model " + spec.Durable,
		FilterSubject: spec.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ViewAckWait,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: 1000,
	}
}
