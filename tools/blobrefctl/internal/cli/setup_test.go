package cli_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/stepservice"
	"github.com/blobref/blobref/tools/blobrefctl/internal/cli"
)

func TestParseSetup(t *testing.T) {
	t.Parallel()
	for args, want := range map[string]time.Duration{"setup": 2 * time.Minute, "setup --timeout 30s": 30 * time.Second} {
		got, err := cli.Parse(strings.Fields(args), time.Now(), io.Discard)
		if err != nil || got.Name != "setup" || got.Timeout != want {
			t.Errorf("Parse(%q): got %+v, %v, want setup with timeout %s", args, got, err, want)
		}
	}
	for args, want := range map[string]string{
		"setup now":             `unexpected argument "now"`,
		"setup --timeout 0s":    "--timeout: must be positive",
		"setup --subject x":     "flag provided but not defined",
		"setup --timeout later": "invalid value",
	} {
		if _, err := cli.Parse(strings.Fields(args), time.Now(), io.Discard); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): got %v, want an error with %q", args, err, want)
		}
	}
	var help bytes.Buffer
	if code := cli.Main(context.Background(), []string{"setup", "-h"}, &help, io.Discard); code != 0 ||
		!strings.Contains(help.String(), "Usage: blobrefctl setup [--timeout D]") || !strings.Contains(help.String(), "CONSUMER_ACK_WAIT") {
		t.Errorf("blobrefctl setup -h: exit %d:\n%s", code, help.String())
	}
}

// blobrefctl setup, as the binary runs it, against a server with nothing
// set up: the streams, the staging bucket and the consumers, with the
// settings in the environment; then again, changing nothing.
func TestMainSetup(t *testing.T) {
	// No t.Parallel: t.Setenv.
	nsrv := testenv.StartNATS(t)
	t.Setenv("NATS_URL", nsrv.URL())
	t.Setenv("STREAM_MAX_AGE", "48h")
	t.Setenv("STAGING_BUCKET", "staged")
	t.Setenv("STAGING_MAX_BYTES", "268435456")
	t.Setenv("CONSUMER_ACK_WAIT", "1m")
	for range 2 {
		var stdout, stderr bytes.Buffer
		if code := cli.Main(context.Background(), []string{"setup"}, &stdout, &stderr); code != 0 {
			t.Fatalf("blobrefctl setup: exit %d\n%s%s", code, stdout.String(), stderr.String())
		}
		for _, want := range []string{
			"stream UPLOADS: subjects uploads.>, replicas 1, max age 48h0m0s\n",
			"stream UPLOADS_DLQ: subjects dlq.uploads.>",
			"object store staged: ttl 72h0m0s, replicas 1, max bytes 268435456\n",
			"consumer blobwriter on UPLOADS: filter uploads.requested.>, ack wait 1m0s",
			"consumer refwriter on UPLOADS: filter uploads.blob.stored.>, ack wait 1m0s",
			"consumer notifier on UPLOADS: filter uploads.completed.>, ack wait 1m0s",
			"consumer ingest-stored on UPLOADS: filter uploads.blob.stored.>",
			"consumer ingest-completed on UPLOADS: filter uploads.completed.>",
			"consumer ingest-deadletters on UPLOADS_DLQ: filter dlq.uploads.>",
		} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("blobrefctl setup: output lacks %q:\n%s", want, stdout.String())
			}
		}
	}

	nc, err := stepservice.ConnectNATS(t.Context(), stepservice.NATSConfig{URL: nsrv.URL()}, "check", testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if s, err := js.Stream(ctx, events.StreamName); err != nil || s.CachedInfo().Config.MaxAge != 48*time.Hour {
		t.Errorf("stream %s: %v, want max age 48h", events.StreamName, err)
	}
	if s, err := js.Stream(ctx, "OBJ_staged"); err != nil || s.CachedInfo().Config.MaxBytes != 256<<20 {
		t.Errorf("staging bucket: %v, want max bytes 256 MiB", err)
	}
	want := step.DurableConfig(events.RefWriterConsumer, step.Options{AckWait: time.Minute, MaxInFlight: 256})
	if c, err := js.Consumer(ctx, events.StreamName, want.Durable); err != nil ||
		c.CachedInfo().Config.AckWait != want.AckWait || c.CachedInfo().Config.MaxAckPending != want.MaxAckPending {
		t.Errorf("consumer %s: %v, want it as DurableConfig makes it", want.Durable, err)
	}

	t.Setenv("STAGING_TTL", "-1h")
	var stderr bytes.Buffer
	if code := cli.Main(context.Background(), []string{"setup"}, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "STAGING_TTL") {
		t.Errorf("blobrefctl setup with a bad setting: exit %d, %q; want 2 and the setting", code, stderr.String())
	}
}
