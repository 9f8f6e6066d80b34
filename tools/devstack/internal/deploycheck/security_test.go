package deploycheck

import (
	"fmt"
	"maps"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The parts of a NetworkPolicy (networking.k8s.io/v1) the checks read.
type (
	networkPolicy struct {
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Spec struct {
			PodSelector labelSelector `json:"podSelector"`
			PolicyTypes []string      `json:"policyTypes"`
			Ingress     []policyRule  `json:"ingress"`
			Egress      []policyRule  `json:"egress"`
		} `json:"spec"`
	}
	labelSelector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	}
	policyRule struct {
		From  []policyPeer `json:"from"`
		To    []policyPeer `json:"to"`
		Ports []struct {
			Port     any    `json:"port"`
			Protocol string `json:"protocol"`
		} `json:"ports"`
	}
	policyPeer struct {
		NamespaceSelector *labelSelector `json:"namespaceSelector"`
		PodSelector       *labelSelector `json:"podSelector"`
		IPBlock           *struct {
			CIDR   string   `json:"cidr"`
			Except []string `json:"except"`
		} `json:"ipBlock"`
	}
)

// namespaceLabel is the label Kubernetes puts on every namespace, its name.
const namespaceLabel = "kubernetes.io/metadata.name"

// secretEnv are variables that hold secrets themselves: none may be set in
// a pod's environment, where `kubectl describe`, crash dumps and child
// processes see them. Their *_FILE forms, or files the SDKs read, are used.
var secretEnv = []string{
	"NATS_PASSWORD", "NATS_TOKEN", "AUTH_TOKENS",
	"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
	"AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
}

// workload is a Deployment or Job of the build: its one container's
// environment and where its files come from.
type workload struct {
	kind, name string
	labels     map[string]string
	pod        podSpec
	env        map[string]string // from the ConfigMaps it reads and env, values only
}

// checkSecurity checks what a kustomize build of the base or an overlay
// must hold for secrets and transport: every service and the setup Job
// reach NATS over TLS with the CA from a mounted file, as their own NATS
// user with the password in a file of a Secret of their own, and Postgres
// with sslmode=verify-full; no secret is in any environment; the services
// run with NATS_SETUP=off after a Job that runs blobrefctl setup as user
// setup; and a NetworkPolicy limits each pod to its work.
func checkSecurity(t *testing.T, root string, objs []object) {
	t.Helper()
	configMaps := map[string]object{}
	var policies []networkPolicy
	for _, o := range objs {
		switch o.Kind {
		case "ConfigMap":
			configMaps[o.Metadata.Name] = o
		case "NetworkPolicy":
			var p networkPolicy
			unmarshal(t, o, &p)
			policies = append(policies, p)
		}
	}
	conf := natsConf(t, root)
	passwordSecrets := map[string]string{} // Secret -> NATS user

	var setupJobs, retentionJobs []workload
	for _, o := range objs {
		switch o.Kind {
		case "Deployment", "Job":
		case "CronJob":
			o.Spec.Template = o.Spec.JobTemplate.Spec.Template
		default:
			continue
		}
		w := newWorkload(t, o, configMaps)
		t.Run("security/"+w.name, func(t *testing.T) {
			checkNoSecretEnv(t, w)
			user := w.name
			if w.kind != "Deployment" {
				// blobrefctl as the operator user setup: `setup` once (a
				// Job), `retention` on a schedule (a CronJob).
				command := map[string]string{"Job": "setup", "CronJob": "retention"}[w.kind]
				if !strings.Contains(w.pod.Containers[0].Image, "/blobrefctl:") && !strings.HasPrefix(w.pod.Containers[0].Image, "blobref/blobrefctl:") {
					t.Errorf("%s %s: image %q, want [<registry>/]blobref/blobrefctl:<tag>", w.kind, w.name, w.pod.Containers[0].Image)
				}
				if args := w.pod.Containers[0].Args; len(args) == 0 || args[0] != command {
					t.Errorf("%s %s: args %q, want blobrefctl %s", w.kind, w.name, args, command)
				}
				user = "setup"
				if w.kind == "Job" {
					setupJobs = append(setupJobs, w)
				} else {
					retentionJobs = append(retentionJobs, w)
				}
				checkEnv(t, w.kind+" "+w.name, envNamesOf(t, root, "tools/blobrefctl"), slices.Sorted(maps.Keys(w.env)))
			} else if w.env["NATS_SETUP"] != "off" {
				t.Errorf("NATS_SETUP %q, want off: the setup Job creates the streams and consumers", w.env["NATS_SETUP"])
			}
			secret := checkNATSClient(t, w, user, conf)
			if other, ok := passwordSecrets[secret]; ok && secret != "" && other != user {
				t.Errorf("NATS users %s and %s share the password Secret %s", other, user, secret)
			}
			passwordSecrets[secret] = user
			if w.kind == "Deployment" {
				checkPostgresClient(t, w)
				known := envNames(t, root, w.name)
				if known["AUTH_TOKENS_FILE"] {
					if _, ok := w.secretFile(w.env["AUTH_TOKENS_FILE"]); !ok {
						t.Errorf("AUTH_TOKENS_FILE %q is not a file of a mounted Secret", w.env["AUTH_TOKENS_FILE"])
					}
				}
				if known["NOTIFIER_ENDPOINTS_FILE"] {
					if _, ok := w.secretFile(w.env["NOTIFIER_ENDPOINTS_FILE"]); !ok {
						t.Errorf("NOTIFIER_ENDPOINTS_FILE %q is not a file of a mounted Secret", w.env["NOTIFIER_ENDPOINTS_FILE"])
					}
					if v := w.env["NOTIFIER_ALLOW_PRIVATE"]; v != "" && v != "false" {
						t.Errorf("NOTIFIER_ALLOW_PRIVATE=%s: webhooks may reach internal addresses", v)
					}
				}
				if f, ok := w.env["AWS_SHARED_CREDENTIALS_FILE"]; ok {
					if _, ok := w.secretFile(f); !ok {
						t.Errorf("AWS_SHARED_CREDENTIALS_FILE %q is not a file of a mounted Secret", f)
					}
				}
				checkNetworkPolicies(t, w, policies, portsFor(known))
			} else if w.kind == "CronJob" {
				checkPostgresClient(t, w)
				checkNetworkPolicies(t, w, policies, allowedPorts{dns: true, nats: true, postgres: true})
			} else {
				checkNetworkPolicies(t, w, policies, allowedPorts{dns: true, nats: true})
			}
		})
	}
	if len(setupJobs) != 1 {
		t.Errorf("got %d Jobs running blobrefctl setup, want 1", len(setupJobs))
	}
	if len(retentionJobs) != 1 {
		t.Errorf("got %d CronJobs running blobrefctl retention, want 1", len(retentionJobs))
	}
	for _, svc := range services(t, root) {
		if conf.accounts["setup"] != conf.accounts[svc] {
			t.Errorf("nats.conf: user setup is in account %q, %s in %q: want one account", conf.accounts["setup"], svc, conf.accounts[svc])
		}
	}
}

func newWorkload(t *testing.T, o object, configMaps map[string]object) workload {
	t.Helper()
	pod := o.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%s %s: got %d containers, want 1", o.Kind, o.Metadata.Name, len(pod.Containers))
	}
	w := workload{kind: o.Kind, name: o.Metadata.Name, labels: o.Spec.Template.Metadata.Labels, pod: pod, env: map[string]string{}}
	c := pod.Containers[0]
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef != nil {
			for k, v := range configMaps[from.ConfigMapRef.Name].Data {
				w.env[k] = v
			}
		}
	}
	for _, e := range c.Env {
		w.env[e.Name] = e.Value
	}
	return w
}

// checkNoSecretEnv fails if a Secret reaches the container's environment,
// or a variable that holds a secret is set at all.
func checkNoSecretEnv(t *testing.T, w workload) {
	t.Helper()
	c := w.pod.Containers[0]
	for _, from := range c.EnvFrom {
		if from.SecretRef != nil {
			t.Errorf("envFrom: Secret %s in the environment, want Secrets mounted as files", from.SecretRef.Name)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("env %s: from Secret %s, want Secrets mounted as files", e.Name, e.ValueFrom.SecretKeyRef.Name)
		}
	}
	for _, name := range secretEnv {
		if _, ok := w.env[name]; ok {
			t.Errorf("env %s is set: a secret in the environment (use a file)", name)
		}
	}
}

// checkNATSClient checks that w reaches NATS over TLS, checking the
// server's certificate against a mounted CA, as NATS user user of
// nats.conf with the password in a file of the Secret blobref-nats-<user>,
// which it returns.
func checkNATSClient(t *testing.T, w workload, user string, conf natsSettings) string {
	t.Helper()
	if u, err := url.Parse(w.env["NATS_URL"]); err != nil || u.Scheme != "tls" {
		t.Errorf("NATS_URL %q: want tls://", w.env["NATS_URL"])
	}
	if _, ok := w.mountedFile(w.env["NATS_CA"]); !ok {
		t.Errorf("NATS_CA %q is not a file of a mounted Secret or ConfigMap", w.env["NATS_CA"])
	}
	if w.env["NATS_USER"] != user {
		t.Errorf("NATS_USER %q, want %q", w.env["NATS_USER"], user)
	}
	if _, ok := conf.accounts[user]; !ok {
		t.Errorf("NATS user %q is not in deploy/nats/nats.conf", user)
	}
	secret, ok := w.secretFile(w.env["NATS_PASSWORD_FILE"])
	if !ok {
		t.Errorf("NATS_PASSWORD_FILE %q is not a file of a mounted Secret", w.env["NATS_PASSWORD_FILE"])
	} else if want := "blobref-nats-" + user; secret != want {
		t.Errorf("NATS_PASSWORD_FILE: from Secret %s, want %s", secret, want)
	}
	return secret
}

// checkPostgresClient checks DATABASE_URL: TLS with the server's
// certificate and host name verified (verify-full) against a mounted CA,
// and the password in a mounted passfile, not in the URL.
func checkPostgresClient(t *testing.T, w workload) {
	t.Helper()
	u, err := url.Parse(w.env["DATABASE_URL"])
	if err != nil {
		t.Errorf("DATABASE_URL: %v", err)
		return
	}
	q := u.Query()
	if q.Get("sslmode") != "verify-full" {
		t.Errorf("DATABASE_URL: sslmode %q, want verify-full", q.Get("sslmode"))
	}
	if _, ok := w.mountedFile(q.Get("sslrootcert")); !ok {
		t.Errorf("DATABASE_URL: sslrootcert %q is not a file of a mounted Secret or ConfigMap", q.Get("sslrootcert"))
	}
	if _, set := u.User.Password(); set {
		t.Error("DATABASE_URL holds a password: want it in the passfile")
	}
	if _, ok := w.secretFile(q.Get("passfile")); !ok {
		t.Errorf("DATABASE_URL: passfile %q is not a file of a mounted Secret", q.Get("passfile"))
	}
}

// mountedFile returns the volume that holds the file at p (a Secret's or a
// ConfigMap's key under its mount path).
func (w workload) mountedFile(p string) (volume, bool) {
	if p == "" {
		return volume{}, false
	}
	for _, m := range w.pod.Containers[0].VolumeMounts {
		if path.Dir(p) != path.Clean(m.MountPath) {
			continue
		}
		for _, v := range w.pod.Volumes {
			if v.Name == m.Name && (v.Secret != nil || v.ConfigMap != nil) {
				return v, true
			}
		}
	}
	return volume{}, false
}

// secretFile returns the name of the Secret whose mounted key is the file
// at p.
func (w workload) secretFile(p string) (string, bool) {
	v, ok := w.mountedFile(p)
	if !ok || v.Secret == nil {
		return "", false
	}
	return v.Secret.SecretName, true
}

// allowedPorts is what a pod may connect to.
type allowedPorts struct {
	dns, nats, postgres, bucket bool
	// webhooks: 443 and 80 to public addresses only (ipBlocks that except
	// the internal ranges), for the notifier's endpoints.
	webhooks bool
}

// portsFor is what a service reading the variables known connects to.
func portsFor(known map[string]bool) allowedPorts {
	return allowedPorts{dns: true, nats: true, postgres: known["DATABASE_URL"], bucket: known["BLOB_URL"],
		webhooks: known["NOTIFIER_ENDPOINTS_FILE"]}
}

// checkNetworkPolicies checks the NetworkPolicies that select w's pods:
// they isolate them both ways; they let in only the HTTP API (from
// anywhere) and the metrics port (from the monitoring namespace); and they
// let out only DNS (to kube-system), NATS (to the nats namespace), Postgres
// and the bucket, each where want says the pod needs it.
func checkNetworkPolicies(t *testing.T, w workload, policies []networkPolicy, want allowedPorts) {
	t.Helper()
	var mine []networkPolicy
	for _, p := range policies {
		if selects(p.Spec.PodSelector.MatchLabels, w.labels) {
			mine = append(mine, p)
		}
	}
	if len(mine) == 0 {
		t.Errorf("no NetworkPolicy selects %s's pods (labels %v)", w.name, w.labels)
		return
	}
	var types []string
	var ingress, egress []policyRule
	for _, p := range mine {
		types = append(types, p.Spec.PolicyTypes...)
		ingress = append(ingress, p.Spec.Ingress...)
		egress = append(egress, p.Spec.Egress...)
	}
	if !slices.Contains(types, "Ingress") || !slices.Contains(types, "Egress") {
		t.Errorf("NetworkPolicies of %s: policyTypes %q, want Ingress and Egress", w.name, types)
	}

	c := w.pod.Containers[0]
	portName := func(p any) string {
		for _, cp := range c.Ports {
			if p == cp.Name || fmt.Sprint(p) == itoa(cp.ContainerPort) {
				return cp.Name
			}
		}
		return fmt.Sprint(p)
	}
	var apiOpen, metricsOpen bool
	for i, r := range ingress {
		if len(r.Ports) == 0 {
			t.Errorf("%s ingress rule %d: no ports (every port), want the ports it opens", w.name, i)
			continue
		}
		for _, p := range r.Ports {
			name := portName(p.Port)
			switch {
			case name == "http" && len(r.From) == 0:
				apiOpen = true
			case name == "metrics" && fromOnly(r.From, "monitoring"):
				metricsOpen = true
			default:
				t.Errorf("%s ingress rule %d: port %v from %s, want only http (from anywhere) and metrics (from the monitoring namespace)",
					w.name, i, p.Port, peers(r.From))
			}
		}
	}
	if slices.ContainsFunc(c.Ports, func(p struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	}) bool {
		return p.Name == "http"
	}) && !apiOpen {
		t.Errorf("%s: no ingress rule opens its API (port http)", w.name)
	}
	if len(c.Ports) > 0 && !metricsOpen {
		t.Errorf("%s: no ingress rule lets the monitoring namespace reach its metrics port", w.name)
	}

	allowed := map[string]bool{}
	for i, r := range egress {
		if len(r.Ports) == 0 {
			t.Errorf("%s egress rule %d: no ports (every port), want the ports it needs", w.name, i)
			continue
		}
		for _, p := range r.Ports {
			port := fmt.Sprint(p.Port)
			ok := false
			switch port {
			case "53":
				ok = want.dns && toOnly(r.To, "kube-system")
			case "4222":
				ok = want.nats && toOnly(r.To, "nats")
			case "5432":
				ok = want.postgres
			case "443":
				ok = want.bucket || want.webhooks && publicOnly(r.To)
			case "80":
				ok = want.webhooks && publicOnly(r.To)
			}
			if !ok {
				t.Errorf("%s egress rule %d: port %s to %s is not what it needs", w.name, i, port, peers(r.To))
			}
			allowed[port] = true
		}
	}
	for port, need := range map[string]bool{"53": want.dns, "4222": want.nats, "5432": want.postgres, "443": want.bucket || want.webhooks} {
		if need && !allowed[port] {
			t.Errorf("%s: no egress rule lets it reach port %s", w.name, port)
		}
	}
}

// internalRanges are the address ranges a rule to the public internet must
// except, by the family of its CIDR.
var internalRanges = map[bool][]string{
	true:  {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10"},
	false: {"fc00::/7", "fe80::/10", "::1/128"},
}

// publicOnly reports whether peers are all ipBlocks that leave out every
// internal range of their family (and not empty).
func publicOnly(peers []policyPeer) bool {
	if len(peers) == 0 {
		return false
	}
	for _, p := range peers {
		if p.IPBlock == nil || p.NamespaceSelector != nil || p.PodSelector != nil {
			return false
		}
		v4 := !strings.Contains(p.IPBlock.CIDR, ":")
		for _, r := range internalRanges[v4] {
			if !slices.Contains(p.IPBlock.Except, r) {
				return false
			}
		}
	}
	return true
}

// fromOnly reports whether peers are pods of the namespace ns only.
func fromOnly(peers []policyPeer, ns string) bool { return toOnly(peers, ns) }

// toOnly reports whether peers are all in namespace ns (and not empty).
func toOnly(peers []policyPeer, ns string) bool {
	if len(peers) == 0 {
		return false
	}
	for _, p := range peers {
		if p.IPBlock != nil || p.NamespaceSelector == nil || p.NamespaceSelector.MatchLabels[namespaceLabel] != ns {
			return false
		}
	}
	return true
}

func peers(ps []policyPeer) string {
	if len(ps) == 0 {
		return "anywhere"
	}
	var out []string
	for _, p := range ps {
		switch {
		case p.IPBlock != nil:
			out = append(out, "ipBlock "+p.IPBlock.CIDR)
		case p.NamespaceSelector != nil:
			out = append(out, fmt.Sprintf("namespaces %v", p.NamespaceSelector.MatchLabels))
		default:
			out = append(out, "pods of its namespace")
		}
	}
	return strings.Join(out, ", ")
}

// TestKustomizeNATS builds deploy/kubernetes/nats, the NetworkPolicy for
// the NATS servers: clients from the overlay's namespace, routes between
// the servers, and the monitoring port (no auth; KEDA reads it) from KEDA's
// and the monitoring namespaces only. It is the namespace of the NATS
// service that the overlay's NATS_URL and KEDA's endpoint name.
func TestKustomizeNATS(t *testing.T) {
	root := repoRoot(t)
	objs := build(t, root, "nats")
	overlay := build(t, root, "overlays/example")
	var blobrefNS string
	for _, o := range overlay {
		if o.Kind == "Deployment" {
			blobrefNS = o.Metadata.Namespace
		}
	}
	natsURL, err := url.Parse(configMap(t, overlay, "blobref-config").Data["NATS_URL"])
	if err != nil {
		t.Fatal(err)
	}
	natsNS := strings.Split(natsURL.Hostname(), ".")[1] // <service>.<namespace>.svc...

	var policies []networkPolicy
	for _, o := range objs {
		if o.Kind == "NetworkPolicy" {
			var p networkPolicy
			unmarshal(t, o, &p)
			policies = append(policies, p)
		}
	}
	if len(policies) != 1 {
		t.Fatalf("got %d NetworkPolicies, want 1", len(policies))
	}
	p := policies[0]
	if p.Metadata.Namespace != natsNS {
		t.Errorf("NetworkPolicy %s: namespace %q, want NATS_URL's %q", p.Metadata.Name, p.Metadata.Namespace, natsNS)
	}
	if p.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "nats" || !slices.Contains(p.Spec.PolicyTypes, "Ingress") {
		t.Errorf("NetworkPolicy %s: want it to select app.kubernetes.io/name=nats for Ingress, got %+v", p.Metadata.Name, p.Spec)
	}
	conf := natsConf(t, root)
	monitorPort := strconv.Itoa(conf.httpPort)
	var clients, monitoring bool
	for i, r := range p.Spec.Ingress {
		if len(r.From) == 0 || len(r.Ports) == 0 {
			t.Errorf("rule %d: from %s on ports %v: want every rule to name its peers and ports", i, peers(r.From), r.Ports)
			continue
		}
		for _, port := range r.Ports {
			switch fmt.Sprint(port.Port) {
			case monitorPort:
				monitoring = true
				for _, peer := range r.From {
					if peer.IPBlock != nil || peer.NamespaceSelector == nil ||
						!slices.Contains([]string{"keda", "monitoring"}, peer.NamespaceSelector.MatchLabels[namespaceLabel]) {
						t.Errorf("monitoring port %s: open to %s, want the keda and monitoring namespaces only", monitorPort, peers([]policyPeer{peer}))
					}
				}
			case "4222":
				clients = clients || slices.ContainsFunc(r.From, func(peer policyPeer) bool {
					return peer.NamespaceSelector != nil && peer.NamespaceSelector.MatchLabels[namespaceLabel] == blobrefNS
				})
			}
		}
	}
	if !clients {
		t.Errorf("no rule lets the namespace %q (the overlay's) reach port 4222", blobrefNS)
	}
	if !monitoring {
		t.Errorf("no rule names the monitoring port %s: KEDA could not read the lag", monitorPort)
	}
}
