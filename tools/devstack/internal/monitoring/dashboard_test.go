package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

// variable is a dashboard variable.
type variable struct {
	Type  string `json:"type"`
	Name  string `json:"name"`
	Query string `json:"query"`
}

// panel is a Grafana panel; a row holds others when collapsed.
type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// datasourceVar is the dashboard's Prometheus data source, a variable the
// operator picks on import.
const datasourceVar = "${datasource}"

// grafanaIntervals stand in for the interval variables Grafana replaces
// before it sends a query; any other `$` in an expression fails to parse.
var grafanaIntervals = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "1m",
	"$__range", "1h",
)

// parseDashboard reads the dashboard at path and returns its queries and
// what is wrong with its structure: no uid or title, no data source
// variable, a panel without a title, an id of another panel, no grid
// position, no queries or another data source, a query without an
// expression or with its panel's refId of another query.
func parseDashboard(path string) ([]query, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	var problems []string
	if d.UID == "" || d.Title == "" {
		problems = append(problems, fmt.Sprintf("uid %q, title %q: want both", d.UID, d.Title))
	}
	if !slices.ContainsFunc(d.Templating.List, func(v variable) bool {
		return v.Type == "datasource" && "${"+v.Name+"}" == datasourceVar && v.Query == "prometheus"
	}) {
		problems = append(problems, "no Prometheus data source variable "+datasourceVar)
	}
	var queries []query
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if ids[p.ID] {
				problems = append(problems, where+": id of another panel")
			}
			ids[p.ID] = true
			if p.Title == "" {
				problems = append(problems, where+": no title")
			}
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
				problems = append(problems, where+": no grid position")
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != datasourceVar {
				problems = append(problems, fmt.Sprintf("%s: data source %+v, want uid %s", where, p.Datasource, datasourceVar))
			}
			if len(p.Targets) == 0 {
				problems = append(problems, where+": no query")
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				tw := fmt.Sprintf("%s, query %s", where, tg.RefID)
				if tg.RefID == "" || refs[tg.RefID] {
					problems = append(problems, tw+": refId empty or of another query")
				}
				refs[tg.RefID] = true
				if tg.Datasource != nil && tg.Datasource.UID != datasourceVar {
					problems = append(problems, fmt.Sprintf("%s: data source %+v, want uid %s", tw, tg.Datasource, datasourceVar))
				}
				if strings.TrimSpace(tg.Expr) == "" {
					problems = append(problems, tw+": no expression")
					continue
				}
				queries = append(queries, query{where: filepath.Base(path) + ": " + tw, expr: grafanaIntervals.Replace(tg.Expr)})
			}
		}
	}
	walk(d.Panels)
	return queries, problems, nil
}

// loadDashboard parses deploy/monitoring's dashboard and fails the test on
// what parseDashboard finds or on an expression that does not parse.
func loadDashboard(t testing.TB) []query {
	t.Helper()
	queries, problems, err := parseDashboard(filepath.Join(repoRoot(t), dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", dashboardFile, p)
	}
	for _, q := range queries {
		if _, err := promqlParser.ParseExpr(q.expr); err != nil {
			t.Errorf("%s: %v", q.where, err)
		}
	}
	if len(queries) == 0 {
		t.Errorf("%s: no query", dashboardFile)
	}
	return queries
}

// TestDashboard checks the Grafana dashboard's structure and that every
// query parses as PromQL.
func TestDashboard(t *testing.T) {
	t.Parallel()
	loadDashboard(t)
}

// TestDashboardCheckFails shows that the checks catch what they are for.
func TestDashboardCheckFails(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, from, to, want string
	}{
		{"expression", "[$__rate_interval]", "[$__rate_intervall]", "parse error"},
		{"variable", "[$__rate_interval]", "[$interval]", "parse error"},
		{"data source", `"uid": "${datasource}"`, `"uid": "prometheus"`, "want uid ${datasource}"},
		{"refId", `"refId": "B"`, `"refId": "A"`, "refId empty or of another query"},
		{"empty expression", `"expr": "sum by (kind)`, `"expr": "", "x": "`, "no expression"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			text := strings.Replace(string(b), c.from, c.to, 1)
			if text == string(b) {
				t.Fatalf("%s has no %q to replace", dashboardFile, c.from)
			}
			path := filepath.Join(t.TempDir(), "dashboard.json")
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			queries, got, err := parseDashboard(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range queries {
				if _, err := promqlParser.ParseExpr(q.expr); err != nil {
					got = append(got, err.Error())
				}
			}
			if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, c.want) }) {
				t.Errorf("got %q, want a problem containing %q", got, c.want)
			}
		})
	}
}
