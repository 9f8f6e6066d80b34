package service_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/service"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/stepservice"
)

// Setup creates what services with NATS_SETUP=off wait for: SetUpStreams
// returns once the streams exist, and Setup's durable consumers are the
// ones the step runners look up.
func TestSetupIsWhatServicesLookUp(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	nc, err := stepservice.ConnectNATS(t.Context(), stepservice.NATSConfig{URL: n.URL()}, "setup-test", testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	waited := make(chan error, 1)
	go func() {
		waited <- stepservice.SetUpStreams(ctx, js, stepservice.SetupOff, events.StreamOptions{}, testenv.Logger(t))
	}()
	if _, err := js.Stream(ctx, events.StreamName); err == nil {
		t.Fatal("UPLOADS exists before setup: SetUpStreams with NATS_SETUP=off created it")
	}

	cfg := &service.SetupConfig{}
	if err := stepservice.Load(cfg); err != nil {
		t.Fatal(err)
	}
	cfg.AckWait, cfg.StagingTTL = 45*time.Second, 12*time.Hour
	for range 2 { // and again, as every later run does
		done, err := service.Setup(ctx, js, cfg)
		if err != nil {
			t.Fatalf("Setup: %v (did %q)", err, done)
		}
		if len(done) != 3+len(service.Consumers)+len(events.IngestViewConsumers) || len(service.Consumers) != 3 {
			t.Errorf("Setup: got %q, want a line for each of 2 streams, the bucket, the steps' 3 consumers and ingest's 3", done)
		}
	}
	if err := <-waited; err != nil {
		t.Fatalf("SetUpStreams with NATS_SETUP=off: %v", err)
	}

	store, err := js.ObjectStore(ctx, cfg.StagingBucket)
	if err != nil {
		t.Fatalf("staging bucket: %v", err)
	}
	if st, err := store.Status(ctx); err != nil || st.TTL() != 12*time.Hour {
		t.Errorf("staging bucket: got %v, %v, want TTL 12h", st, err)
	}
	for _, spec := range service.Consumers {
		want := step.DurableConfig(spec, cfg.RunnerOptions())
		c, err := js.Consumer(ctx, events.StreamName, spec.Durable)
		if err != nil {
			t.Fatalf("consumer %s: %v", spec.Durable, err)
		}
		got := c.CachedInfo().Config
		if got.FilterSubject != want.FilterSubject || got.AckWait != 45*time.Second || got.MaxAckPending != want.MaxAckPending ||
			got.MaxDeliver != want.MaxDeliver || got.AckPolicy != want.AckPolicy {
			t.Errorf("consumer %s: got %+v, want %+v", spec.Durable, got, want)
		}
	}
	for _, spec := range events.IngestViewConsumers {
		want := service.ViewConsumerConfig(spec)
		c, err := js.Consumer(ctx, spec.StreamOrDefault(), spec.Durable)
		if err != nil {
			t.Fatalf("consumer %s: %v", spec.Durable, err)
		}
		got := c.CachedInfo().Config
		if got.FilterSubject != want.FilterSubject || got.AckWait != want.AckWait || got.MaxDeliver != -1 ||
			got.AckPolicy != jetstream.AckExplicitPolicy || got.DeliverPolicy != jetstream.DeliverAllPolicy {
			t.Errorf("consumer %s: got %+v, want %+v", spec.Durable, got, want)
		}
	}
}
