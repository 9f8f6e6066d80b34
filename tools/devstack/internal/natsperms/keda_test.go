package natsperms

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// scaledObject is the part of a KEDA ScaledObject the test reads.
type scaledObject struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		Triggers []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// jsz is the part of the monitoring endpoint's /jsz answer KEDA's
// nats-jetstream scaler reads (pkg/scalers/nats_jetstream_scaler.go).
type jsz struct {
	Accounts []struct {
		Name    string `json:"name"`
		Streams []struct {
			Name      string `json:"name"`
			Consumers []struct {
				Name          string `json:"name"`
				NumPending    int    `json:"num_pending"`
				NumAckPending int    `json:"num_ack_pending"`
			} `json:"consumer_detail"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

// TestKEDAFindsTheLag asks a server running nats.conf what KEDA asks it,
// with the account, stream and consumer of each ScaledObject of the example
// overlay, and checks that the answer holds the consumer's lag: the
// messages its service has not processed yet.
func TestKEDAFindsTheLag(t *testing.T) {
	t.Parallel()
	objs := scaledObjects(t)
	if len(objs) == 0 {
		t.Fatal("the example overlay has no ScaledObject")
	}
	n := startServer(t, confPath(t))
	setUp(t, n.url(), step.Options{}) // the consumers
	in := connect(t, n.url(), ingest)
	bw := connect(t, n.url(), blobwriter)
	// 3 requests for blobwriter, 2 blob_stored events for refwriter.
	for range 3 {
		ev := request(t, testenv.ID("lag"), []byte("x"), "")
		testenv.Publish(t, in.js, ev, ev.ID)
	}
	for i := range 2 {
		ev := blobStored(t, request(t, testenv.ID("lag"), []byte("x"), ""))
		testenv.Publish(t, bw.js, ev, "blob/UPLOADS/"+strconv.Itoa(i))
	}
	// 1 completed event for notifier.
	rw := connect(t, n.url(), refwriter)
	done := completed(t, request(t, testenv.ID("lag"), []byte("x"), ""))
	testenv.Publish(t, rw.js, done, "ref/UPLOADS/1")
	want := map[string]int{events.BlobWriterConsumer.Durable: 3, events.RefWriterConsumer.Durable: 2, events.NotifierConsumer.Durable: 1}

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if len(objs) != len(want) {
		t.Errorf("got %d ScaledObjects, want one per consumer (%d)", len(objs), len(want))
	}
	for _, so := range objs {
		t.Run(so.Metadata.Name, func(t *testing.T) {
			if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "nats-jetstream" {
				t.Fatalf("triggers: got %+v, want one nats-jetstream trigger", so.Spec.Triggers)
			}
			md := so.Spec.Triggers[0].Metadata
			// KEDA's query, on this server's monitoring port.
			u := n.monitorURL() + "/jsz?acc=" + url.QueryEscape(md["account"]) + "&consumers=true&config=true"
			resp, err := client.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got jsz
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatalf("%s: %v", u, err)
			}
			lag := -1
			for _, a := range got.Accounts {
				for _, s := range a.Streams {
					for _, c := range s.Consumers {
						if a.Name == md["account"] && s.Name == md["stream"] && c.Name == md["consumer"] {
							lag = c.NumPending + c.NumAckPending
						}
					}
				}
			}
			if lag != want[md["consumer"]] {
				t.Errorf("lag of account %q stream %q consumer %q at %s: got %d, want %d",
					md["account"], md["stream"], md["consumer"], u, lag, want[md["consumer"]])
			}
		})
	}
	n.checkNoViolations(t)
}

// scaledObjects builds the example overlay (kustomize build) and returns
// its ScaledObjects.
func scaledObjects(t *testing.T) []scaledObject {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "deploy", "kubernetes", "overlays", "example")
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []scaledObject
	for _, r := range rm.Resources() {
		if r.GetKind() != "ScaledObject" {
			continue
		}
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var so scaledObject
		if err := json.Unmarshal(b, &so); err != nil {
			t.Fatalf("ScaledObject %s: %v", r.GetName(), err)
		}
		out = append(out, so)
	}
	return out
}

// TestAckFormatV2 runs blobwriter's consumer with the server's v2 ack
// subjects ($JS.ACK.<domain>.<account hash>.<stream>.<consumer>...),
// feature flag js_ack_fc_v2, which nats.conf already allows for when a
// later server makes it the default.
func TestAckFormatV2(t *testing.T) {
	t.Parallel()
	n := startServer(t, confPath(t), "feature_flags { js_ack_fc_v2: true }")
	setUp(t, n.url(), step.Options{})
	in := connect(t, n.url(), ingest)
	bw := connect(t, n.url(), blobwriter)
	cons, err := bw.js.Consumer(t.Context(), events.StreamName, events.BlobWriterConsumer.Durable)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		ev := request(t, testenv.ID("v2"), []byte("x"), "")
		testenv.Publish(t, in.js, ev, ev.ID)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got int
	for msg := range batch.Messages() {
		got++
		if !strings.HasPrefix(msg.Reply(), "$JS.ACK._.") {
			t.Errorf("reply subject %q: want the v2 ack format, $JS.ACK._.<account hash>.UPLOADS.blobwriter...", msg.Reply())
		}
		if err := msg.InProgress(); err != nil {
			t.Errorf("InProgress: %v", err)
		}
		if got == 1 {
			err = msg.DoubleAck(t.Context())
		} else {
			err = msg.Term()
		}
		if err != nil {
			t.Errorf("ack: %v", err)
		}
	}
	if err := batch.Error(); err != nil || got != 2 {
		t.Fatalf("fetch: got %d messages, %v, want 2", got, err)
	}
	if err := bw.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	bw.checkNoViolations(t)
	n.checkNoViolations(t)
}
