package monitoring

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
)

// severities are the values an alert's severity label may take.
var severities = []string{"critical", "warning"}

// minFor is the least `for` of an alert: one evaluation never fires one.
const minFor = time.Minute

// parseRules parses a rule file as `promtool check rules` does: strictly
// (unknown fields are errors), every expression with the PromQL parser,
// every label and annotation template with Prometheus's template engine.
func parseRules(path string) (*rulefmt.RuleGroups, []error) {
	logger := slog.New(slog.DiscardHandler)
	return rulefmt.ParseFile(path, false, model.UTF8Validation, promqlParser, logger)
}

// checkRules returns what is wrong with groups beyond what parseRules
// finds: rules promtool reports as duplicates (the same name and labels),
// and alerts without a severity of severities, a summary and a description,
// a `for` of at least minFor, or with templates naming labels the alert's
// expression does not keep.
func checkRules(groups *rulefmt.RuleGroups) []string {
	var problems []string
	seen := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			where := fmt.Sprintf("group %s, rule %s", g.Name, name)
			key := name + "\x00" + labelKey(g.Labels, r.Labels)
			if seen[key] {
				problems = append(problems, where+": a duplicate (same name and labels)")
			}
			seen[key] = true
			if r.Record != "" {
				continue
			}
			if !slices.Contains(severities, r.Labels["severity"]) {
				problems = append(problems, fmt.Sprintf("%s: severity %q, want one of %v", where, r.Labels["severity"], severities))
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					problems = append(problems, fmt.Sprintf("%s: no %s annotation", where, a))
				}
			}
			if time.Duration(r.For) < minFor {
				problems = append(problems, fmt.Sprintf("%s: for %v, want at least %v", where, r.For, minFor))
			}
			problems = append(problems, checkTemplateLabels(where, r)...)
		}
	}
	return problems
}

// checkTemplateLabels returns the `$labels.x` of r's templates that r's
// expression does not keep, when its form says which it keeps.
func checkTemplateLabels(where string, r rulefmt.Rule) []string {
	expr, err := promqlParser.ParseExpr(r.Expr)
	if err != nil {
		return nil // parseRules reports it
	}
	kept, ok := outputLabels(expr)
	if !ok {
		return nil
	}
	var problems []string
	for _, texts := range []map[string]string{r.Labels, r.Annotations} {
		for k, text := range texts {
			for _, m := range templateLabel.FindAllStringSubmatch(text, -1) {
				if !slices.Contains(kept, m[1]) {
					problems = append(problems, fmt.Sprintf("%s: %s names $labels.%s, but the expression keeps only %v", where, k, m[1], kept))
				}
			}
		}
	}
	return problems
}

// labelKey is a canonical form of the labels of a rule and its group.
func labelKey(maps ...map[string]string) string {
	all := map[string]string{}
	for _, m := range maps {
		for k, v := range m {
			all[k] = v
		}
	}
	var parts []string
	for k, v := range all {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, "\x00")
}

// ruleQueries returns the expressions of groups, and the names their
// recording rules define.
func ruleQueries(file string, groups *rulefmt.RuleGroups) ([]query, map[string]bool) {
	var qs []query
	recorded := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
			qs = append(qs, query{where: fmt.Sprintf("%s: rule %s%s", file, r.Alert, r.Record), expr: r.Expr})
		}
	}
	return qs, recorded
}

// loadRules parses deploy/monitoring's rule file and fails the test on
// what parseRules or checkRules find.
func loadRules(t testing.TB) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := parseRules(filepath.Join(repoRoot(t), alertsFile))
	for _, err := range errs {
		t.Errorf("%s: %v", alertsFile, err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	for _, p := range checkRules(groups) {
		t.Errorf("%s: %s", alertsFile, p)
	}
	return groups
}

// TestAlertRules checks deploy/monitoring/alerts.yaml as `promtool check
// rules` does, and the house rules of checkRules. Every alert the file
// must have is there.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	groups := loadRules(t)
	var alerts []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts = append(alerts, r.Alert)
			}
		}
	}
	// Issue 14's list: consumer lag growing, dead letters arriving, step
	// errors, ingest 5xx; and a dependency down (issue 12's outages), whose
	// metric TestMetricsExist finds on the running services.
	for _, want := range []string{"BlobrefConsumerLagGrowing", "BlobrefDeadLetters", "BlobrefStepRetrying", "BlobrefIngestErrors",
		"BlobrefDependencyDown"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("%s: no alert %s (has %v)", alertsFile, want, alerts)
		}
	}
}

// TestAlertRulesCheckFails shows that the checks catch what they are for:
// each rule file below has one fault.
func TestAlertRulesCheckFails(t *testing.T) {
	t.Parallel()
	const good = `groups:
  - name: g
    rules:
      - alert: A
        expr: sum by (step) (rate(blobref_step_messages_total[5m])) > 1
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "step {{ $labels.step }}"
          description: "d"
`
	cases := []struct {
		name, from, to, want string
	}{
		{"expression", "> 1", "> > 1", "could not parse expression"},
		{"unknown field", "for: 5m", "for: 5m\n        fore: 5m", "field fore not found"},
		{"template", `"step {{ $labels.step }}"`, `"step {{ $labels.step "`, "annotation \"summary\""},
		{"severity", "severity: warning", "severity: page", `severity "page"`},
		{"summary", "summary:", "summry:", "no summary annotation"},
		{"for", "for: 5m", "for: 0s", "for 0s, want at least 1m"},
		{"template label", "by (step)", "by (job)", "names $labels.step"},
		{"duplicate", "", "", "a duplicate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			text := strings.Replace(good, c.from, c.to, 1)
			if c.name == "duplicate" {
				text += strings.SplitN(good, "rules:\n", 2)[1]
			}
			path := filepath.Join(t.TempDir(), "rules.yaml")
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			groups, errs := parseRules(path)
			var got []string
			for _, err := range errs {
				got = append(got, err.Error())
			}
			if len(errs) == 0 {
				got = checkRules(groups)
			}
			if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, c.want) }) {
				t.Errorf("got %q, want a problem containing %q", got, c.want)
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "rules.yaml")
		if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
			t.Fatal(err)
		}
		groups, errs := parseRules(path)
		if len(errs) > 0 {
			t.Fatalf("parse: %v", errs)
		}
		if got := checkRules(groups); len(got) > 0 {
			t.Errorf("got %q, want no problem", got)
		}
	})
}
