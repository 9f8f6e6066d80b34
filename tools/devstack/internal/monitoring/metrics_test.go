//go:build unix

package monitoring

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/blobref/blobref/internal/freeport"
	"github.com/blobref/blobref/internal/natsproc"
	"github.com/blobref/blobref/internal/testenv"
)

// within is how long the test waits for the pipeline: the services to be
// ready, the upload to complete, its series to show.
const within = 2 * time.Minute

// TestMetricsExist runs the real services against a real nats-server and
// Postgres, carries one upload through them, and checks every metric the
// alert rules and the dashboard name: the services' against their /metrics,
// the JetStream ones against prometheus-nats-exporter's list, with the
// streams, consumers and accounts the server's /jsz reports, as the
// exporter would read them. Subtests show that the check fails for a
// misspelled metric, label or value.
func TestMetricsExist(t *testing.T) {
	t.Parallel()
	groups := loadRules(t)
	queries, recorded := ruleQueries(alertsFile, groups)
	queries = append(queries, loadDashboard(t)...)
	if t.Failed() {
		t.FailNow()
	}

	p := startPipeline(t)
	p.upload(t)
	exporter := exporterCatalog(readJsz(t, p.monitorURL))

	p.awaitObserved(t)
	p.observed = true
	c := checker{services: p.scrape(t), exporter: exporter, recorded: recorded}
	for _, q := range queries {
		for _, pr := range c.check(q) {
			t.Error(pr)
		}
	}
	if t.Failed() {
		t.Logf("the services expose: %s", strings.Join(c.services.names("blobref_"), ", "))
		t.FailNow()
	}

	t.Run("fails", func(t *testing.T) {
		cases := []struct {
			name, expr, want string
		}{
			{"misspelled metric", `sum(rate(blobref_step_message_total[5m]))`,
				"metric blobref_step_message_total is not in the services' /metrics"},
			{"bare histogram", `histogram_quantile(0.99, sum by (le) (rate(blobref_step_duration_seconds[5m])))`,
				"blobref_step_duration_seconds is a histogram: select blobref_step_duration_seconds_bucket"},
			{"histogram without le", `sum by (le) (rate(blobref_step_duration_seconds_count[5m]))`,
				"by (le): no metric under it has label le"},
			{"misspelled label", `blobref_step_messages_total{outcom="dead"}`,
				"metric blobref_step_messages_total has no label outcom"},
			{"misspelled value", `blobref_step_messages_total{outcome="deadletter"}`,
				`outcome="deadletter", but the services' /metrics shows outcome only with dead, done, retried, skipped`},
			{"misspelled grouping", `sum by (stpe) (blobref_step_in_flight)`,
				"by (stpe): no metric under it has label stpe"},
			{"misspelled exporter metric", `jetstream_consumer_num_pendng`,
				"metric jetstream_consumer_num_pendng is not in prometheus-nats-exporter's"},
			{"exporter label", `jetstream_consumer_num_pending{consumer="blobwriter"}`,
				"has no label consumer"},
			{"unknown stream", `jetstream_stream_total_messages{stream_name="UPLOAD_DLQ"}`,
				`stream_name="UPLOAD_DLQ", but prometheus-nats-exporter's`},
			{"unknown consumer", `jetstream_consumer_num_pending{consumer_name=~"blob_writer|ref_writer"}`,
				`matches none of blobwriter, ingest-completed, ingest-deadletters, ingest-stored, refwriter`},
			{"no metric name", `{__name__=~"blobref_.+"}`, "names no metric"},
		}
		for _, tc := range cases {
			got := c.check(query{where: tc.name, expr: tc.expr})
			if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Errorf("%s: %s: got %q, want a problem containing %q", tc.name, tc.expr, got, tc.want)
			}
		}
		// Each query of the files, which passed above, fails with its first
		// metric misspelled.
		for _, q := range queries {
			sels, _ := selectors(mustParse(t, q.expr))
			name := sels[0].name
			bad := query{where: q.where, expr: strings.Replace(q.expr, name, name+"x", 1)}
			if got := c.check(bad); !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "metric "+name+"x is not in") }) {
				t.Errorf("%s with %s misspelled: got %q, want it reported", q.where, name, got)
			}
		}
	})
}

// pipeline is a nats-server, a Postgres schema and the three services built
// from the workspace, on a file:// bucket.
type pipeline struct {
	monitorURL string // the server's monitoring endpoint
	api        string // ingest's API
	services   []*process
	// observed is set once the services have counted the upload: a later
	// failure is the files', and the servers' logs would only hide it.
	observed bool
}

// showLogs reports whether the test's cleanup shows what the servers
// logged.
func (p *pipeline) showLogs(t *testing.T) bool { return t.Failed() && !p.observed }

// startPipeline starts the pipeline and waits until every service is ready.
func startPipeline(t *testing.T) *pipeline {
	t.Helper()
	bin := testenv.BuildServices(t, "ingest", "blobwriter", "refwriter")
	_, dbURL := testenv.NewSchema(t, "mon_")
	p := &pipeline{api: "http://" + testenv.FreeAddr(t)}
	natsURL := p.startNATS(t)
	blobURL := (&url.URL{Scheme: "file", Path: filepath.Join(t.TempDir(), "blobs"), RawQuery: "create_dir=true"}).String()
	common := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir(),
		"NATS_URL=" + natsURL, "DATABASE_URL=" + dbURL, "LOG_FORMAT=text", "LOG_LEVEL=info",
	}
	p.services = []*process{
		p.startService(t, bin, "ingest", append(common, "HTTP_ADDR="+strings.TrimPrefix(p.api, "http://"), "AUTH_TOKENS=monZ7q2Xv9Lm4Np8Rt3Wy6Bc1Df5Gh0Jk=mon")),
		p.startService(t, bin, "blobwriter", append(common, "BLOB_URL="+blobURL)),
		p.startService(t, bin, "refwriter", append(common, "BLOB_URL="+blobURL)),
	}
	for _, s := range p.services {
		s.AwaitReady(t, s.metrics)
	}
	return p
}

// startNATS starts a JetStream server with its monitoring endpoint, which
// prometheus-nats-exporter reads, and returns its client URL.
func (p *pipeline) startNATS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("max_payload: 8MB\njetstream {\n  max_memory_store: 64MB\n  max_file_store: 4GB\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsproc.Start(natsproc.Config{StoreDir: filepath.Join(dir, "store"), ConfigFile: conf, Args: []string{"-m", strconv.Itoa(port)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Stop()
		if p.showLogs(t) {
			t.Logf("nats-server's log ends:\n%s", srv.Tail(30))
		}
	})
	p.monitorURL = "http://127.0.0.1:" + strconv.Itoa(port)
	return srv.URL()
}

// upload sends one upload through the pipeline and waits for its
// reference.
func (p *pipeline) upload(t *testing.T) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.api+"/v1/uploads?subject=users/42/avatar", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer monZ7q2Xv9Lm4Np8Rt3Wy6Bc1Df5Gh0Jk")
	req.Header.Set("Idempotency-Key", "monitoring-1")
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Prefer", fmt.Sprintf("wait=%d", int(within.Seconds())))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	var st struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal(body, &st); err != nil || st.State != "completed" {
		t.Fatalf("upload: got %s %s, want its state completed", resp.Status, body)
	}
}

// awaitObserved waits until each service has counted and timed its part
// of the upload: a step does after it published the next event, and ingest
// after it answered.
func (p *pipeline) awaitObserved(t *testing.T) {
	t.Helper()
	want := map[string][]string{
		"ingest":     {"blobref_ingest_request_duration_seconds_count"},
		"blobwriter": {"blobref_step_duration_seconds_count", `step="blob"`},
		"refwriter":  {"blobref_step_duration_seconds_count", `step="ref"`},
	}
	deadline := time.Now().Add(within)
	for _, s := range p.services {
		w := want[s.Name]
		for testenv.ScrapeCounter(t, "http://"+s.metrics+"/metrics", w[0], w[1:]...) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no %v after %v", s.Name, w, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// scrape reads every service's /metrics into one catalog.
func (p *pipeline) scrape(t *testing.T) catalog {
	t.Helper()
	cat := catalog{source: "the services' /metrics", series: map[string]map[string]*labelInfo{}}
	for _, s := range p.services {
		resp, err := httpClient.Get("http://" + s.metrics + "/metrics")
		if err != nil {
			t.Fatalf("%s /metrics: %v", s.Name, err)
		}
		text := expfmt.NewTextParser(model.UTF8Validation)
		families, err := text.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s /metrics: %v", s.Name, err)
		}
		for name, f := range families {
			addFamily(cat, name, f)
		}
	}
	return cat
}

// addFamily adds the series of a metric family as PromQL selects them.
func addFamily(cat catalog, name string, f *dto.MetricFamily) {
	for _, m := range f.GetMetric() {
		lbls := map[string]string{}
		for _, l := range m.GetLabel() {
			lbls[l.GetName()] = l.GetValue()
		}
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			cat.addSeries(name+"_sum", lbls)
			cat.addSeries(name+"_count", lbls)
			for _, b := range m.GetHistogram().GetBucket() {
				cat.addSeries(name+"_bucket", with(lbls, "le", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)))
			}
			cat.addSeries(name+"_bucket", with(lbls, "le", "+Inf"))
		case dto.MetricType_SUMMARY:
			cat.addSeries(name+"_sum", lbls)
			cat.addSeries(name+"_count", lbls)
			for _, q := range m.GetSummary().GetQuantile() {
				cat.addSeries(name, with(lbls, "quantile", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64)))
			}
		default:
			cat.addSeries(name, lbls)
		}
	}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func mustParse(t *testing.T, expr string) parser.Expr {
	t.Helper()
	e, err := promqlParser.ParseExpr(expr)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
