package deploycheck

import (
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/s3blob"
)

// loadCompose loads docker-compose.yml as `docker compose config` does:
// compose-go validates it against the Compose Specification's schema,
// interpolates, normalizes and checks its consistency.
func loadCompose(t *testing.T, root string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithName("blobref"))
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	project, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return project
}

func TestCompose(t *testing.T) {
	root := repoRoot(t)
	project := loadCompose(t, root)
	for _, name := range []string{"nats", "postgres", "minio", "createbuckets", "setup"} {
		if _, ok := project.Services[name]; !ok {
			t.Errorf("docker-compose.yml has no service %q", name)
		}
	}
	// A development stack, with development passwords: reachable from this
	// machine only.
	for name, sc := range project.Services {
		for _, p := range sc.Ports {
			if p.HostIP != "127.0.0.1" {
				t.Errorf("service %s publishes port %d on %q, want 127.0.0.1", name, p.Target, p.HostIP)
			}
		}
	}
	checkComposeSetup(t, root, project)
	checkComposeRetention(t, root, project)
	checkComposeToken(t, root, project)
	for _, svc := range services(t, root) {
		t.Run(svc, func(t *testing.T) {
			sc, ok := project.Services[svc]
			if !ok {
				t.Fatalf("docker-compose.yml does not run services/%s", svc)
			}
			checkComposeService(t, root, project, svc, sc)
		})
	}
}

func checkComposeService(t *testing.T, root string, project *types.Project, svc string, sc types.ServiceConfig) {
	b := sc.Build
	if b == nil {
		t.Fatal("no build section: want the root Dockerfile with build arg SERVICE")
	}
	if b.Context != root || b.Dockerfile != "Dockerfile" {
		t.Errorf("build: got context %q dockerfile %q, want %q and Dockerfile", b.Context, b.Dockerfile, root)
	}
	if got := value(b.Args, "SERVICE"); got != svc {
		t.Errorf("build arg SERVICE: got %q, want %q", got, svc)
	}

	var set []string
	for name := range sc.Environment {
		set = append(set, name)
	}
	slices.Sort(set)
	known := envNames(t, root, svc)
	checkEnv(t, "docker-compose.yml service "+svc, known, set)
	for _, name := range []string{"NATS_URL", "DATABASE_URL", "BLOB_URL", "METRICS_ADDR", "HTTP_ADDR"} {
		if known[name] && value(sc.Environment, name) == "" {
			t.Errorf("environment: %s is not set", name)
		}
	}

	// Metrics: the port the image exposes, the service listens on and
	// compose publishes are one.
	_, port, err := net.SplitHostPort(value(sc.Environment, "METRICS_ADDR"))
	if err != nil {
		t.Errorf("METRICS_ADDR: %v", err)
	}
	if got := value(b.Args, "METRICS_PORT"); got != port {
		t.Errorf("build arg METRICS_PORT: got %q, want METRICS_ADDR's port %q", got, port)
	}
	if !slices.ContainsFunc(sc.Ports, func(p types.ServicePortConfig) bool { return p.Target == parsePort(t, port) }) {
		t.Errorf("ports: metrics port %s is not published", port)
	}
	// An HTTP API (ingest's) is published on the port it listens on.
	if known["HTTP_ADDR"] {
		_, port, err := net.SplitHostPort(value(sc.Environment, "HTTP_ADDR"))
		if err != nil {
			t.Errorf("HTTP_ADDR: %v", err)
		} else if !slices.ContainsFunc(sc.Ports, func(p types.ServicePortConfig) bool { return p.Target == parsePort(t, port) }) {
			t.Errorf("ports: HTTP port %s is not published", port)
		}
	}

	// NATS_URL names the nats service; the service connects as its own
	// NATS user (TestComposeNATS checks the password).
	if u, err := url.Parse(value(sc.Environment, "NATS_URL")); err != nil || u.Hostname() != "nats" {
		t.Errorf("NATS_URL: got %q, want nats://nats:4222", value(sc.Environment, "NATS_URL"))
	}
	if got := value(sc.Environment, "NATS_USER"); got != svc {
		t.Errorf("NATS_USER: got %q, want %q (each service its own NATS user, deploy/nats/nats.conf)", got, svc)
	}
	if value(sc.Environment, "NATS_PASSWORD") == "" {
		t.Error("NATS_PASSWORD is not set")
	}

	// DATABASE_URL reaches the postgres service's database with its password.
	pg := project.Services["postgres"]
	dbcfg, err := pgconn.ParseConfig(value(sc.Environment, "DATABASE_URL"))
	if err != nil {
		t.Errorf("DATABASE_URL: %v", err)
	} else if dbcfg.Host != "postgres" || dbcfg.Database != value(pg.Environment, "POSTGRES_DB") ||
		dbcfg.User != value(pg.Environment, "POSTGRES_USER") || dbcfg.Password != value(pg.Environment, "POSTGRES_PASSWORD") {
		t.Errorf("DATABASE_URL: got host %q db %q user %q, want the postgres service's POSTGRES_DB, POSTGRES_USER and POSTGRES_PASSWORD",
			dbcfg.Host, dbcfg.Database, dbcfg.User)
	}

	// The setup service creates the streams and consumers; the service only
	// looks them up, once it ran.
	if got := value(sc.Environment, "NATS_SETUP"); got != "off" {
		t.Errorf("NATS_SETUP: got %q, want off (the setup service creates the streams and consumers)", got)
	}

	// Start order.
	want := map[string]string{
		"nats":     types.ServiceConditionHealthy,
		"postgres": types.ServiceConditionHealthy,
		"setup":    types.ServiceConditionCompletedSuccessfully,
	}
	if known["BLOB_URL"] {
		want["createbuckets"] = types.ServiceConditionCompletedSuccessfully
	}
	for dep, cond := range want {
		if got := sc.DependsOn[dep].Condition; got != cond {
			t.Errorf("depends_on %s: got condition %q, want %q", dep, got, cond)
		}
		if d := project.Services[dep]; cond == types.ServiceConditionHealthy && d.HealthCheck == nil {
			t.Errorf("depends on %s being healthy, but %s has no healthcheck", dep, dep)
		}
	}
	if known["BLOB_URL"] {
		checkComposeBucket(t, project, sc)
	}
}

// checkComposeSetup checks the one-shot service setup: `blobrefctl setup`
// from the image the Dockerfile builds, as NATS user setup, once NATS is
// healthy, with nothing set that blobrefctl does not read.
func checkComposeSetup(t *testing.T, root string, project *types.Project) {
	t.Helper()
	sc, ok := project.Services["setup"]
	if !ok {
		return
	}
	if sc.Build == nil || sc.Build.Dockerfile != "Dockerfile" || value(sc.Build.Args, "SERVICE") != "blobrefctl" {
		t.Errorf("setup: want the root Dockerfile with build arg SERVICE=blobrefctl, got %+v", sc.Build)
	}
	checkComposeCtl(t, root, "setup", sc)
	if sc.DependsOn["nats"].Condition != types.ServiceConditionHealthy {
		t.Error("setup: does not wait for nats to be healthy")
	}
}

// checkComposeRetention checks the one-shot service retention: `blobrefctl
// retention` from setup's image, as NATS user setup, once setup has run and
// Postgres is healthy.
func checkComposeRetention(t *testing.T, root string, project *types.Project) {
	t.Helper()
	sc, ok := project.Services["retention"]
	if !ok {
		t.Error("docker-compose.yml has no service retention (blobrefctl retention)")
		return
	}
	if sc.Build == nil || sc.Build.Dockerfile != "Dockerfile" || value(sc.Build.Args, "SERVICE") != "blobrefctl" ||
		sc.Image != project.Services["setup"].Image {
		t.Errorf("retention: build %+v, image %q; want the root Dockerfile with SERVICE=blobrefctl, setup's image", sc.Build, sc.Image)
	}
	checkComposeCtl(t, root, "retention", sc)
	if sc.DependsOn["setup"].Condition != types.ServiceConditionCompletedSuccessfully ||
		sc.DependsOn["postgres"].Condition != types.ServiceConditionHealthy {
		t.Error("retention: does not wait for setup to complete and postgres to be healthy")
	}
	if u, err := url.Parse(value(sc.Environment, "DATABASE_URL")); err != nil || u.Hostname() != "postgres" {
		t.Errorf("retention: DATABASE_URL %q, want the postgres service", value(sc.Environment, "DATABASE_URL"))
	}
}

// checkComposeCtl checks a service that runs blobrefctl command as NATS
// user setup, with nothing set that blobrefctl does not read.
func checkComposeCtl(t *testing.T, root, command string, sc types.ServiceConfig) {
	t.Helper()
	if len(sc.Command) == 0 || sc.Command[0] != command {
		t.Errorf("%s: command %q, want [%s ...] (blobrefctl %s)", command, sc.Command, command, command)
	}
	if got := value(sc.Environment, "NATS_USER"); got != "setup" {
		t.Errorf("%s: NATS_USER %q, want setup (deploy/nats/nats.conf)", command, got)
	}
	if u, err := url.Parse(value(sc.Environment, "NATS_URL")); err != nil || u.Hostname() != "nats" {
		t.Errorf("%s: NATS_URL %q, want nats://nats:4222", command, value(sc.Environment, "NATS_URL"))
	}
	var set []string
	for name := range sc.Environment {
		set = append(set, name)
	}
	slices.Sort(set)
	checkEnv(t, "docker-compose.yml service "+command, envNamesOf(t, root, "tools/blobrefctl"), set)
}

// checkComposeToken checks ingest's dev token: one the token rules accept
// (32 characters or more, no placeholder), and the one the curl example at
// the top of docker-compose.yml sends.
func checkComposeToken(t *testing.T, root string, project *types.Project) {
	t.Helper()
	tokens := value(project.Services["ingest"].Environment, "AUTH_TOKENS")
	if tokens == "" {
		t.Fatal("ingest: AUTH_TOKENS is not set")
	}
	for _, entry := range strings.Split(tokens, ",") {
		token, _, _ := strings.Cut(entry, "=")
		if len(token) < 32 {
			t.Errorf("ingest: AUTH_TOKENS token %q is %d characters, want at least 32", token, len(token))
		}
		for _, placeholder := range []string{"change-me", "changeme", "placeholder", "example", "secret"} {
			if strings.Contains(strings.ToLower(token), placeholder) {
				t.Errorf("ingest: AUTH_TOKENS token %q looks like a placeholder (%s)", token, placeholder)
			}
		}
		if !strings.Contains(readFile(t, filepath.Join(root, "docker-compose.yml")), "Bearer "+token) {
			t.Errorf("docker-compose.yml: the curl example does not send the dev token %q", token)
		}
	}
}

// checkComposeBucket checks the bucket settings of a service that opens
// the bucket: gocloud.dev's s3blob accepts every parameter of BLOB_URL (it
// refuses unknown ones), the bucket is the one createbuckets makes, and the
// credentials are MinIO's.
func checkComposeBucket(t *testing.T, project *types.Project, sc types.ServiceConfig) {
	blobURL := value(sc.Environment, "BLOB_URL")
	bucket, err := blob.OpenBucket(t.Context(), blobURL)
	if err != nil {
		t.Errorf("BLOB_URL %q: gocloud.dev refuses it: %v", blobURL, err)
	} else {
		_ = bucket.Close()
	}
	if u, err := url.Parse(blobURL); err == nil {
		mc := project.Services["createbuckets"]
		if cmd := strings.Join(mc.Command, " "); !strings.Contains(cmd, "mc mb --ignore-existing blobref/"+u.Host) {
			t.Errorf("createbuckets: command %q does not create bucket %q", cmd, u.Host)
		}
		if ep := u.Query().Get("endpoint"); !strings.Contains(ep, "://minio:") {
			t.Errorf("BLOB_URL endpoint: got %q, want the minio service", ep)
		}
	}
	minio := project.Services["minio"]
	if value(sc.Environment, "AWS_ACCESS_KEY_ID") != value(minio.Environment, "MINIO_ROOT_USER") ||
		value(sc.Environment, "AWS_SECRET_ACCESS_KEY") != value(minio.Environment, "MINIO_ROOT_PASSWORD") {
		t.Error("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not MinIO's root credentials")
	}
}

// TestComposeNATS checks that the nats service runs deploy/nats/nats.conf,
// parsed here by the NATS server's own configuration parser with the nats
// service's environment (the users' passwords), that its store and
// healthcheck match the configuration, and that every service's NATS_USER
// and NATS_PASSWORD connect to a server running it.
func TestComposeNATS(t *testing.T) {
	root := repoRoot(t)
	project := loadCompose(t, root)
	nats := project.Services["nats"]
	for name, v := range nats.Environment {
		if v != nil {
			t.Setenv(name, *v)
		}
	}

	confPath := ""
	for i, arg := range nats.Command {
		if (arg == "-c" || arg == "--config") && i+1 < len(nats.Command) {
			confPath = nats.Command[i+1]
		}
	}
	if confPath == "" {
		t.Fatalf("nats command %q has no -c <config>", nats.Command)
	}
	var mounted string
	for _, v := range nats.Volumes {
		if v.Target == confPath {
			mounted = v.Source
		}
	}
	if want := filepath.Join(root, "deploy", "nats", "nats.conf"); mounted != want {
		t.Fatalf("nats: %s is mounted from %q, want %q", confPath, mounted, want)
	}
	opts, err := server.ProcessConfigFile(mounted)
	if err != nil {
		t.Fatalf("deploy/nats/nats.conf: %v", err)
	}
	if !opts.JetStream {
		t.Error("nats.conf: JetStream is off")
	}
	if opts.Port != 4222 || opts.HTTPPort != 8222 {
		t.Errorf("nats.conf: got port %d, http_port %d, want 4222 and 8222", opts.Port, opts.HTTPPort)
	}
	if opts.MaxPayload < 2<<20 {
		t.Errorf("nats.conf: max_payload %d is below 2 MiB (inline uploads are up to 1 MiB plus headers)", opts.MaxPayload)
	}
	if !slices.ContainsFunc(nats.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeVolume && v.Target == opts.StoreDir
	}) {
		t.Errorf("nats: no named volume at the JetStream store_dir %q", opts.StoreDir)
	}
	if hc := nats.HealthCheck; hc == nil || !strings.Contains(strings.Join(hc.Test, " "), ":8222/healthz") {
		t.Errorf("nats: healthcheck should GET :8222/healthz, got %+v", hc)
	}

	// The services' credentials, against a server running the file.
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", server.RANDOM_PORT, 0
	opts.StoreDir = t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server from deploy/nats/nats.conf: %v", err)
	}
	srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	for _, svc := range append(services(t, root), "setup") {
		env := project.Services[svc].Environment
		nc, err := natsgo.Connect(srv.ClientURL(), natsgo.UserInfo(value(env, "NATS_USER"), value(env, "NATS_PASSWORD")), natsgo.NoReconnect())
		if err != nil {
			t.Errorf("%s: connect with its NATS_USER and NATS_PASSWORD: %v", svc, err)
			continue
		}
		nc.Close()
	}
}

func value(m types.MappingWithEquals, key string) string {
	if v, ok := m[key]; ok && v != nil {
		return *v
	}
	return ""
}

func parsePort(t *testing.T, s string) uint32 {
	t.Helper()
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		t.Fatalf("port %q: %v", s, err)
	}
	return uint32(p)
}
