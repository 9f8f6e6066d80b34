package monitoring

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// promqlParser parses PromQL as Prometheus does with no feature flags.
var promqlParser = parser.NewParser(parser.Options{})

// query is one PromQL expression of a rule or a panel, and where it is.
type query struct {
	where string
	expr  string
}

// selector is a metric an expression selects.
type selector struct {
	name     string
	matchers []*labels.Matcher // besides the name
}

// scrapeLabels are the labels Prometheus gives every series it scrapes.
var scrapeLabels = []string{"job", "instance"}

// selectors returns the metric selectors of expr. A selector that names no
// metric (only `{__name__=~"…"}`) is an error: what it selects cannot be
// checked.
func selectors(expr parser.Expr) ([]selector, error) {
	var out []selector
	var err error
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		s := selector{name: vs.Name}
		for _, m := range vs.LabelMatchers {
			switch {
			case m.Name != labels.MetricName:
				s.matchers = append(s.matchers, m)
			case m.Type == labels.MatchEqual:
				s.name = m.Value
			}
		}
		if s.name == "" && err == nil {
			err = fmt.Errorf("selector %s names no metric", vs)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// labelUse is a label an expression groups by (`by (…)`) or matches on
// (`on (…)`), with the selectors whose series it is meant to be found on.
type labelUse struct {
	label  string
	clause string
	scope  []selector
}

// labelUses returns the labels of expr's `by` and `on` clauses. A `by`
// label must be on some series of its aggregation; an `on` label on some
// series of each side of its operation.
func labelUses(expr parser.Expr) []labelUse {
	var out []labelUse
	scope := func(e parser.Expr) []selector {
		s, _ := selectors(e)
		return s
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.AggregateExpr:
			if n.Without {
				return nil
			}
			for _, l := range n.Grouping {
				out = append(out, labelUse{label: l, clause: "by", scope: scope(n.Expr)})
			}
		case *parser.BinaryExpr:
			if n.VectorMatching == nil || !n.VectorMatching.On {
				return nil
			}
			for _, l := range n.VectorMatching.MatchingLabels {
				out = append(out,
					labelUse{label: l, clause: "on", scope: scope(n.LHS)},
					labelUse{label: l, clause: "on", scope: scope(n.RHS)})
			}
		}
		return nil
	})
	return out
}

// outputLabels returns the labels of the series expr evaluates to, when
// its form says so (an aggregation with `by`, an operation on one, a
// histogram_quantile of one); ok is false when it does not.
func outputLabels(expr parser.Expr) (out []string, ok bool) {
	switch e := expr.(type) {
	case *parser.ParenExpr:
		return outputLabels(e.Expr)
	case *parser.NumberLiteral:
		return nil, true
	case *parser.AggregateExpr:
		switch e.Op {
		case parser.TOPK, parser.BOTTOMK, parser.LIMITK, parser.LIMIT_RATIO, parser.COUNT_VALUES:
			return nil, false
		}
		if e.Without {
			return nil, false
		}
		return e.Grouping, true
	case *parser.BinaryExpr:
		// One-to-one matching, and `and`/`unless`, keep the left side's
		// labels; against a number, the vector's.
		if _, scalar := e.LHS.(*parser.NumberLiteral); scalar {
			return outputLabels(e.RHS)
		}
		if e.VectorMatching != nil && e.VectorMatching.Card != parser.CardOneToOne && e.Op != parser.LAND && e.Op != parser.LUNLESS {
			return nil, false
		}
		if e.Op == parser.LOR {
			return nil, false
		}
		return outputLabels(e.LHS)
	case *parser.Call:
		if e.Func.Name == "histogram_quantile" && len(e.Args) == 2 {
			l, ok := outputLabels(e.Args[1])
			return slices.DeleteFunc(slices.Clone(l), func(s string) bool { return s == "le" }), ok
		}
	}
	return nil, false
}

// labelInfo is what is known of a label's values: those seen, and whether
// they are all it can take.
type labelInfo struct {
	values map[string]bool // nil: not known
	closed bool
}

// catalog is the series a source exposes: for each sample name (as PromQL
// selects it: a histogram foo is foo_bucket, foo_sum and foo_count), its
// labels.
type catalog struct {
	source string
	series map[string]map[string]*labelInfo
}

// addSeries records a series of name with labels.
func (c catalog) addSeries(name string, lbls map[string]string) {
	known, ok := c.series[name]
	if !ok {
		known = map[string]*labelInfo{}
		c.series[name] = known
	}
	for k, v := range lbls {
		info, ok := known[k]
		if !ok {
			info = &labelInfo{values: map[string]bool{}}
			known[k] = info
		}
		if info.values != nil {
			info.values[v] = true
		}
	}
}

// names lists the catalog's sample names with prefix.
func (c catalog) names(prefix string) []string {
	var out []string
	for n := range c.series {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// checker checks the metrics queries name against the services' catalog and,
// for names with exporterPrefix, the exporter's. recorded are the names
// recording rules define.
type checker struct {
	services, exporter catalog
	recorded           map[string]bool
}

// check returns what is wrong with q: it does not parse, or it names a
// metric its source does not expose, a label that metric does not carry, or
// a label value never seen (or, for a label whose values are all known, a
// regular expression matching none).
func (c checker) check(q query) []string {
	expr, err := promqlParser.ParseExpr(q.expr)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", q.where, err)}
	}
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, q.where+": "+fmt.Sprintf(format, args...))
	}
	sels, err := selectors(expr)
	if err != nil {
		add("%v", err)
	}
	for _, s := range sels {
		if s.name == "" || c.recorded[s.name] {
			continue
		}
		cat := c.catalogOf(s.name)
		lbls, ok := cat.series[s.name]
		if !ok {
			add("metric %s is not in %s%s", s.name, cat.source, histogramHint(cat, s.name))
			continue
		}
		for _, m := range s.matchers {
			if slices.Contains(scrapeLabels, m.Name) {
				continue
			}
			info, ok := lbls[m.Name]
			if !ok {
				add("metric %s has no label %s (it has %s)", s.name, m.Name, strings.Join(labelNames(lbls), ", "))
				continue
			}
			if info.values == nil {
				continue
			}
			switch m.Type {
			case labels.MatchEqual:
				if m.Value != "" && !info.values[m.Value] {
					add("metric %s: %s, but %s shows %s only with %s", s.name, m, cat.source, m.Name, strings.Join(keys(info.values), ", "))
				}
			case labels.MatchRegexp:
				if info.closed && !slices.ContainsFunc(keys(info.values), m.Matches) {
					add("metric %s: %s matches none of %s", s.name, m, strings.Join(keys(info.values), ", "))
				}
			}
		}
	}
	for _, u := range labelUses(expr) {
		if slices.Contains(scrapeLabels, u.label) || c.anyHas(u.scope, u.label) {
			continue
		}
		var names []string
		for _, s := range u.scope {
			names = append(names, s.name)
		}
		add("%s (%s): no metric under it has label %s (%s)", u.clause, u.label, u.label, strings.Join(names, ", "))
	}
	return problems
}

// catalogOf is the catalog a metric name is checked against.
func (c checker) catalogOf(name string) catalog {
	if strings.HasPrefix(name, exporterPrefix) {
		return c.exporter
	}
	return c.services
}

// anyHas reports whether a metric of scope carries label, or is defined by a
// recording rule (whose labels are not known here).
func (c checker) anyHas(scope []selector, label string) bool {
	for _, s := range scope {
		if c.recorded[s.name] {
			return true
		}
		if _, ok := c.catalogOf(s.name).series[s.name][label]; ok {
			return true
		}
	}
	return false
}

// histogramHint explains a bare histogram name: PromQL selects a classic
// histogram's foo_bucket, foo_sum or foo_count, never foo.
func histogramHint(cat catalog, name string) string {
	if _, ok := cat.series[name+"_bucket"]; ok {
		return fmt.Sprintf(" (%s is a histogram: select %s_bucket, %s_sum or %s_count)", name, name, name, name)
	}
	return ""
}

func labelNames(m map[string]*labelInfo) []string {
	out := append([]string(nil), scrapeLabels...)
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// templateLabel finds `$labels.name` in an alert's label or annotation
// templates.
var templateLabel = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
