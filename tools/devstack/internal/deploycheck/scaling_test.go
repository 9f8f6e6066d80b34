package deploycheck

import (
	"encoding/json"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/blobref/blobref/pkg/events"
)

// consumers are the durable JetStream consumers of the consumer services
// (those whose main runs a step: stepservice.Run or MainStep), by service:
// what their KEDA ScaledObjects must name.
var consumers = map[string]events.ConsumerSpec{
	"blobwriter": events.BlobWriterConsumer,
	"refwriter":  events.RefWriterConsumer,
	"notifier":   events.NotifierConsumer,
}

// runsStep finds, in a service's main, the call that runs a step.
var runsStep = regexp.MustCompile(`\bstepservice\.(Run|MainStep)(\[[^\]]*\])?\(|\bservice\.RunStep\(`)

type (
	// hpa is a HorizontalPodAutoscaler (autoscaling/v2).
	hpa struct {
		Spec struct {
			ScaleTargetRef struct {
				Kind string `json:"kind"`
				Name string `json:"name"`
			} `json:"scaleTargetRef"`
			MinReplicas int `json:"minReplicas"`
			MaxReplicas int `json:"maxReplicas"`
			Metrics     []struct {
				Type     string `json:"type"`
				Resource *struct {
					Name string `json:"name"`
				} `json:"resource"`
			} `json:"metrics"`
		} `json:"spec"`
	}
	// scaledObject is a KEDA ScaledObject (keda.sh/v1alpha1).
	scaledObject struct {
		Spec struct {
			ScaleTargetRef struct {
				Kind string `json:"kind"`
				Name string `json:"name"`
			} `json:"scaleTargetRef"`
			MinReplicaCount *int `json:"minReplicaCount"`
			MaxReplicaCount *int `json:"maxReplicaCount"`
			Triggers        []struct {
				Type     string            `json:"type"`
				Metadata map[string]string `json:"metadata"`
			} `json:"triggers"`
		} `json:"spec"`
	}
	// pdb is a PodDisruptionBudget (policy/v1).
	pdb struct {
		Spec struct {
			MinAvailable   any `json:"minAvailable"`
			MaxUnavailable any `json:"maxUnavailable"`
		} `json:"spec"`
	}
)

// checkDisruptionAndScaling checks that each service has a
// PodDisruptionBudget of its own, that ingest (the HTTP API) scales on CPU,
// and, with keda, that each consumer scales with a KEDA ScaledObject on its
// own durable consumer's lag, in the account of its NATS user and on the
// monitoring port of the NATS server behind NATS_URL. A Deployment an
// autoscaler owns has no spec.replicas (applying it again would reset the
// count).
func checkDisruptionAndScaling(t *testing.T, root string, objs []object, keda bool) {
	t.Helper()
	deployments := map[string]object{}
	var pdbs, hpas, sos []object
	for _, o := range objs {
		switch o.Kind {
		case "Deployment":
			deployments[o.Metadata.Name] = o
		case "PodDisruptionBudget":
			pdbs = append(pdbs, o)
		case "HorizontalPodAutoscaler":
			hpas = append(hpas, o)
		case "ScaledObject":
			sos = append(sos, o)
		}
	}
	if !keda && len(sos) > 0 {
		t.Errorf("got %d ScaledObjects, want none: the base must not need KEDA", len(sos))
	}
	conf := natsConf(t, root)
	natsURL := configMap(t, objs, "blobref-config").Data["NATS_URL"]

	autoscaled := map[string]string{} // Deployment -> what scales it
	for _, svc := range services(t, root) {
		t.Run("scaling/"+svc, func(t *testing.T) {
			d, ok := deployments[svc]
			if !ok {
				t.Fatalf("no Deployment %s", svc)
			}
			pods := d.Spec.Template.Metadata.Labels

			// One PodDisruptionBudget selects the service's pods.
			var budgets []string
			for _, p := range pdbs {
				if selects(p.Spec.Selector.MatchLabels, pods) {
					budgets = append(budgets, p.Metadata.Name)
					var b pdb
					unmarshal(t, p, &b)
					if b.Spec.MinAvailable == nil && b.Spec.MaxUnavailable == nil {
						t.Errorf("PodDisruptionBudget %s: neither minAvailable nor maxUnavailable", p.Metadata.Name)
					}
				}
			}
			if len(budgets) != 1 {
				t.Errorf("PodDisruptionBudgets selecting %s's pods: got %q, want one", svc, budgets)
			}

			if envNames(t, root, svc)["HTTP_ADDR"] {
				var found bool
				for _, o := range hpas {
					var h hpa
					unmarshal(t, o, &h)
					if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != svc {
						continue
					}
					found = true
					autoscaled[svc] = "HorizontalPodAutoscaler " + o.Metadata.Name
					cpu := false
					for _, m := range h.Spec.Metrics {
						cpu = cpu || m.Type == "Resource" && m.Resource != nil && m.Resource.Name == "cpu"
					}
					if !cpu || h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < h.Spec.MinReplicas {
						t.Errorf("HorizontalPodAutoscaler %s: want a cpu Resource metric and 2 <= minReplicas <= maxReplicas, got %+v", o.Metadata.Name, h.Spec)
					}
				}
				if !found {
					t.Errorf("no HorizontalPodAutoscaler scales Deployment %s", svc)
				}
			}

			spec, known := consumers[svc]
			consumer := runsStep.MatchString(readFile(t, filepath.Join(root, "services", svc, "main.go")))
			if consumer && !known {
				t.Fatalf("services/%s runs a step, but this test does not know its durable consumer", svc)
			}
			if !keda || !consumer {
				return
			}
			var found []string
			for _, o := range sos {
				var so scaledObject
				unmarshal(t, o, &so)
				if so.Spec.ScaleTargetRef.Name != svc {
					continue
				}
				found = append(found, o.Metadata.Name)
				autoscaled[svc] = "ScaledObject " + o.Metadata.Name
				if k := so.Spec.ScaleTargetRef.Kind; k != "" && k != "Deployment" {
					t.Errorf("ScaledObject %s: scaleTargetRef kind %q, want Deployment", o.Metadata.Name, k)
				}
				if mn, mx := so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount; mn == nil || mx == nil || *mn > *mx {
					t.Errorf("ScaledObject %s: want minReplicaCount <= maxReplicaCount", o.Metadata.Name)
				}
				if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "nats-jetstream" {
					t.Errorf("ScaledObject %s: got triggers %+v, want one of type nats-jetstream", o.Metadata.Name, so.Spec.Triggers)
					continue
				}
				md := so.Spec.Triggers[0].Metadata
				want := map[string]string{
					"stream":   events.StreamName,
					"consumer": spec.Durable,
					"account":  conf.accounts[svc],
				}
				for k, v := range want {
					if md[k] != v {
						t.Errorf("ScaledObject %s: %s %q, want %q", o.Metadata.Name, k, md[k], v)
					}
				}
				if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n < 1 {
					t.Errorf("ScaledObject %s: lagThreshold %q, want a positive integer", o.Metadata.Name, md["lagThreshold"])
				}
				// The monitoring endpoint is the NATS server the services
				// connect to, on nats.conf's http_port.
				host, port, err := net.SplitHostPort(md["natsServerMonitoringEndpoint"])
				u, uerr := url.Parse(natsURL)
				if err != nil || uerr != nil || host != u.Hostname() || port != strconv.Itoa(conf.httpPort) {
					t.Errorf("ScaledObject %s: natsServerMonitoringEndpoint %q, want NATS_URL's host (%q) and nats.conf's http_port %d",
						o.Metadata.Name, md["natsServerMonitoringEndpoint"], natsURL, conf.httpPort)
				}
			}
			if len(found) != 1 {
				t.Errorf("ScaledObjects scaling Deployment %s: got %q, want one", svc, found)
			}
		})
	}
	for name, by := range autoscaled {
		if deployments[name].Spec.Replicas != nil {
			t.Errorf("Deployment %s sets spec.replicas, but %s owns its replica count", name, by)
		}
	}
}

// natsSettings is what the manifests must agree with in deploy/nats/nats.conf.
type natsSettings struct {
	accounts map[string]string // user -> account
	httpPort int
}

// natsConf parses deploy/nats/nats.conf with the NATS server's parser, the
// passwords it reads from the environment set to placeholders.
func natsConf(t *testing.T, root string) natsSettings {
	t.Helper()
	path := filepath.Join(root, "deploy", "nats", "nats.conf")
	for _, m := range regexp.MustCompile(`(?m)^[^#\n]*password:\s*\$(\w+)`).FindAllStringSubmatch(readFile(t, path), -1) {
		t.Setenv(m[1], "placeholder")
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("deploy/nats/nats.conf: %v", err)
	}
	s := natsSettings{accounts: map[string]string{}, httpPort: opts.HTTPPort}
	for _, u := range opts.Users {
		s.accounts[u.Username] = u.Account.Name
	}
	return s
}

// configMap returns the ConfigMap generated as name (kustomize appends a
// hash to it).
func configMap(t *testing.T, objs []object, name string) object {
	t.Helper()
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `(-[a-z0-9]+)?$`)
	for _, o := range objs {
		if o.Kind == "ConfigMap" && re.MatchString(o.Metadata.Name) {
			return o
		}
	}
	t.Fatalf("no ConfigMap %s", name)
	return object{}
}

// selects reports whether a selector with matchLabels sel selects pods
// labelled pods.
func selects(sel, pods map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if pods[k] != v {
			return false
		}
	}
	return true
}

func unmarshal(t *testing.T, o object, v any) {
	t.Helper()
	if err := json.Unmarshal(o.raw, v); err != nil {
		t.Fatalf("%s %s: %v", o.Kind, o.Metadata.Name, err)
	}
}
