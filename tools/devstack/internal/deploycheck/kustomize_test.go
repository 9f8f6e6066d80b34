package deploycheck

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// The parts of the Kubernetes objects the checks read.
type (
	object struct {
		raw      []byte // the whole object, as JSON
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Data map[string]string `json:"data"`
		Spec struct {
			Replicas *int `json:"replicas"`
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Template podTemplate `json:"template"`
			// JobTemplate is a CronJob's Job.
			JobTemplate struct {
				Spec struct {
					Template podTemplate `json:"template"`
				} `json:"spec"`
			} `json:"jobTemplate"`
		} `json:"spec"`
	}
	podTemplate struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec podSpec `json:"spec"`
	}
	podSpec struct {
		SecurityContext struct {
			RunAsNonRoot *bool `json:"runAsNonRoot"`
		} `json:"securityContext"`
		Containers []container `json:"containers"`
		Volumes    []volume    `json:"volumes"`
	}
	volume struct {
		Name   string `json:"name"`
		Secret *struct {
			SecretName string `json:"secretName"`
		} `json:"secret"`
		ConfigMap *struct {
			Name string `json:"name"`
		} `json:"configMap"`
	}
	container struct {
		Name         string   `json:"name"`
		Image        string   `json:"image"`
		Args         []string `json:"args"`
		VolumeMounts []struct {
			Name      string `json:"name"`
			MountPath string `json:"mountPath"`
		} `json:"volumeMounts"`
		Ports []struct {
			Name          string `json:"name"`
			ContainerPort int    `json:"containerPort"`
		} `json:"ports"`
		Env []struct {
			Name      string `json:"name"`
			Value     string `json:"value"`
			ValueFrom *struct {
				SecretKeyRef *struct {
					Name string `json:"name"`
					Key  string `json:"key"`
				} `json:"secretKeyRef"`
			} `json:"valueFrom"`
		} `json:"env"`
		EnvFrom []struct {
			ConfigMapRef *struct {
				Name string `json:"name"`
			} `json:"configMapRef"`
			SecretRef *struct {
				Name string `json:"name"`
			} `json:"secretRef"`
		} `json:"envFrom"`
		StartupProbe   *probe `json:"startupProbe"`
		LivenessProbe  *probe `json:"livenessProbe"`
		ReadinessProbe *probe `json:"readinessProbe"`
		Resources      struct {
			Requests map[string]string `json:"requests"`
			Limits   map[string]string `json:"limits"`
		} `json:"resources"`
		SecurityContext struct {
			ReadOnlyRootFilesystem   *bool `json:"readOnlyRootFilesystem"`
			AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
		} `json:"securityContext"`
	}
	probe struct {
		HTTPGet *struct {
			Path string `json:"path"`
			Port any    `json:"port"`
		} `json:"httpGet"`
	}
	// service is a Kubernetes Service.
	service struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Selector map[string]string `json:"selector"`
			Ports    []struct {
				Name       string `json:"name"`
				Port       int    `json:"port"`
				TargetPort any    `json:"targetPort"`
			} `json:"ports"`
		} `json:"spec"`
	}
)

// build runs `kustomize build deploy/kubernetes/<dir>` through kustomize's
// API.
func build(t *testing.T, root, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(root, "deploy", "kubernetes", dir))
	if err != nil {
		t.Fatalf("kustomize build deploy/kubernetes/%s: %v", dir, err)
	}
	var objs []object
	for _, r := range rm.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		o := object{raw: b}
		if err := json.Unmarshal(b, &o); err != nil {
			t.Fatalf("%s %s: %v", r.GetKind(), r.GetName(), err)
		}
		objs = append(objs, o)
	}
	return objs
}

func TestKustomizeBase(t *testing.T) {
	root := repoRoot(t)
	objs := build(t, root, "base")
	checkManifests(t, root, objs)
	checkDisruptionAndScaling(t, root, objs, false)
	checkSecurity(t, root, objs)
}

// TestKustomizeOverlay builds the example overlay, which adds KEDA's
// ScaledObjects (components/keda), a namespace, registry images and R3
// streams to the base, and checks it as the base plus what it adds.
func TestKustomizeOverlay(t *testing.T) {
	root := repoRoot(t)
	objs := build(t, root, filepath.Join("overlays", "example"))
	checkManifests(t, root, objs)
	checkDisruptionAndScaling(t, root, objs, true)
	checkSecurity(t, root, objs)
	cm := configMap(t, objs, "blobref-config")
	if got := cm.Data["STREAM_REPLICAS"]; got != "3" {
		t.Errorf("ConfigMap blobref-config: STREAM_REPLICAS %q, want 3 (R3 on a JetStream cluster)", got)
	}
}

// checkManifests checks each service's Deployment (and ingest's Service)
// in a kustomize build.
func checkManifests(t *testing.T, root string, objs []object) {
	t.Helper()
	configMaps := map[string]object{}
	deployments := map[string]object{}
	var svcs []service
	for _, o := range objs {
		switch o.Kind {
		case "ConfigMap":
			configMaps[o.Metadata.Name] = o
		case "Deployment":
			deployments[o.Metadata.Name] = o
		case "Service":
			var s service
			if err := json.Unmarshal(o.raw, &s); err != nil {
				t.Fatalf("Service %s: %v", o.Metadata.Name, err)
			}
			svcs = append(svcs, s)
		}
	}
	for _, svc := range services(t, root) {
		t.Run(svc, func(t *testing.T) {
			d, ok := deployments[svc]
			if !ok {
				t.Fatalf("no Deployment %s in the build", svc)
			}
			checkDeployment(t, root, svc, d, configMaps)
			if envNames(t, root, svc)["HTTP_ADDR"] {
				checkHTTPService(t, svc, d, svcs)
			}
		})
	}
}

func checkDeployment(t *testing.T, root, svc string, d object, configMaps map[string]object) {
	known := envNames(t, root, svc)
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels", k, v)
		}
	}
	pod := d.Spec.Template.Spec
	if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("pod securityContext: runAsNonRoot is not true")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("got %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if !strings.HasPrefix(c.Image, "blobref/"+svc+":") && !strings.Contains(c.Image, "/blobref/"+svc+":") {
		t.Errorf("image: got %q, want [<registry>/]blobref/%s:<tag>", c.Image, svc)
	}

	var set []string
	metricsAddr := ""
	for _, e := range c.Env {
		set = append(set, e.Name)
		if e.Name == "METRICS_ADDR" {
			metricsAddr = e.Value
		}
	}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef != nil {
			cm, ok := configMaps[from.ConfigMapRef.Name]
			if !ok {
				t.Errorf("envFrom: ConfigMap %q is not in the base", from.ConfigMapRef.Name)
			}
			for k := range cm.Data {
				set = append(set, k)
			}
		}
	}
	slices.Sort(set)
	checkEnv(t, "Deployment "+svc, known, set)
	for _, name := range []string{"NATS_URL", "DATABASE_URL", "BLOB_URL", "HTTP_ADDR"} {
		if known[name] && !slices.Contains(set, name) {
			t.Errorf("%s reaches the container neither from env nor from envFrom", name)
		}
	}

	_, port, err := net.SplitHostPort(metricsAddr)
	if err != nil {
		t.Fatalf("env METRICS_ADDR %q: %v", metricsAddr, err)
	}
	if !slices.ContainsFunc(c.Ports, func(p struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	}) bool {
		return p.Name == "metrics" && port == itoa(p.ContainerPort)
	}) {
		t.Errorf("ports: no port named metrics at METRICS_ADDR's port %s", port)
	}
	for name, pr := range map[string]struct {
		p    *probe
		path string
	}{
		"startupProbe":   {c.StartupProbe, "/healthz"},
		"livenessProbe":  {c.LivenessProbe, "/healthz"},
		"readinessProbe": {c.ReadinessProbe, "/readyz"},
	} {
		if pr.p == nil || pr.p.HTTPGet == nil || pr.p.HTTPGet.Path != pr.path || pr.p.HTTPGet.Port != "metrics" {
			t.Errorf("%s: want httpGet %s on port metrics", name, pr.path)
		}
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("resources: want cpu and memory requests and a memory limit, got %+v", c.Resources)
	}
	sc := c.SecurityContext
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("container securityContext: want readOnlyRootFilesystem true and allowPrivilegeEscalation false")
	}
}

// checkHTTPService checks that the HTTP API of Deployment d (HTTP_ADDR)
// listens on its container port named http, and that a Service selects
// d's pods and sends to that port.
func checkHTTPService(t *testing.T, svc string, d object, svcs []service) {
	t.Helper()
	c := d.Spec.Template.Spec.Containers[0]
	httpAddr := ""
	for _, e := range c.Env {
		if e.Name == "HTTP_ADDR" {
			httpAddr = e.Value
		}
	}
	_, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		t.Fatalf("env HTTP_ADDR %q: %v", httpAddr, err)
	}
	if !slices.ContainsFunc(c.Ports, func(p struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	}) bool {
		return p.Name == "http" && port == itoa(p.ContainerPort)
	}) {
		t.Errorf("ports: no port named http at HTTP_ADDR's port %s", port)
	}
	labels := d.Spec.Template.Metadata.Labels
	for _, s := range svcs {
		selects := len(s.Spec.Selector) > 0
		for k, v := range s.Spec.Selector {
			selects = selects && labels[k] == v
		}
		if !selects {
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort == "http" || fmt.Sprint(p.TargetPort) == port {
				return
			}
		}
		t.Errorf("Service %s selects %s's pods but sends to none of port http (%s)", s.Metadata.Name, svc, port)
		return
	}
	t.Errorf("no Service selects %s's pods (labels %v)", svc, labels)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
