package testenv

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Counter returns the sum of the samples of counter family in g whose labels
// include each of match, written as in the text exposition format
// (`step="blob"`). It is 0 while no sample matches.
func Counter(t testing.TB, g prometheus.Gatherer, family string, match ...string) float64 {
	t.Helper()
	return sum(t, g, family, match, func(m *dto.Metric) float64 { return m.GetCounter().GetValue() })
}

// Gauge returns the sum of the samples of gauge family in g whose labels
// include each of match, as Counter does for counters.
func Gauge(t testing.TB, g prometheus.Gatherer, family string, match ...string) float64 {
	t.Helper()
	return sum(t, g, family, match, func(m *dto.Metric) float64 { return m.GetGauge().GetValue() })
}

// Histogram returns the count and the sum of the observations of histogram
// family in g whose labels include each of match, as Counter does.
func Histogram(t testing.TB, g prometheus.Gatherer, family string, match ...string) (count, total float64) {
	t.Helper()
	count = sum(t, g, family, match, func(m *dto.Metric) float64 { return float64(m.GetHistogram().GetSampleCount()) })
	total = sum(t, g, family, match, func(m *dto.Metric) float64 { return m.GetHistogram().GetSampleSum() })
	return count, total
}

// sum adds value of each sample of family in g whose labels include each
// of match.
func sum(t testing.TB, g prometheus.Gatherer, family string, match []string, value func(*dto.Metric) float64) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	var total float64
	for _, f := range families {
		if f.GetName() != family {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]bool{}
			for _, l := range m.GetLabel() {
				labels[fmt.Sprintf("%s=%q", l.GetName(), l.GetValue())] = true
			}
			if matchAll(match, func(s string) bool { return labels[s] }) {
				total += value(m)
			}
		}
	}
	return total
}

// ScrapeCounter is Counter over the text exposition served at url, e.g. a
// service's /metrics: the sum of the samples of family whose line contains
// each of match.
func ScrapeCounter(t testing.TB, url, family string, match ...string) float64 {
	t.Helper()
	resp, err := http.Get(url) // #nosec G107 -- the metrics endpoint of a process the test started
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	var sum float64
	for line := range strings.SplitSeq(string(body), "\n") {
		if !strings.HasPrefix(line, family+"{") && !strings.HasPrefix(line, family+" ") {
			continue
		}
		if !matchAll(match, func(s string) bool { return strings.Contains(line, s) }) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

func matchAll(match []string, has func(string) bool) bool {
	for _, m := range match {
		if !has(m) {
			return false
		}
	}
	return true
}
