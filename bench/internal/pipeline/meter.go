package pipeline

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blobref/blobref/bench/internal/procstat"
)

// Names of what a Meter reads beside the programs.
const (
	// Postgres is the Postgres backends serving the pipeline's connections.
	Postgres = "postgres"
	// Bench is the benchmark's own process.
	Bench = "bench"
)

// AppName is the application_name of the Postgres connections of label (a
// service's name, or a floor's): the pipeline's schema and the label, which
// tell its backends from those of any other user of the server.
func (p *Pipeline) AppName(label string) string {
	return "blobref-" + p.Schema + "-" + label
}

// ClientURL is DatabaseURL with application_name AppName(label), for the
// connections of label.
func (p *Pipeline) ClientURL(label string) string {
	u := *p.dbURL
	q := u.Query()
	q.Set("application_name", p.AppName(label))
	u.RawQuery = q.Encode()
	return u.String()
}

// withAdmin runs f on the pipeline's own connection (application_name
// blobref-bench-admin, so that its backend is no label's), opening it on
// first use.
func (p *Pipeline) withAdmin(ctx context.Context, f func(*pgx.Conn) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.admin == nil || p.admin.IsClosed() {
		cfg, err := pgx.ParseConfig(p.adminURL)
		if err != nil {
			return fmt.Errorf("pipeline: %w", err)
		}
		cfg.RuntimeParams["application_name"] = "blobref-bench-admin"
		if p.admin, err = pgx.ConnectConfig(ctx, cfg); err != nil {
			return fmt.Errorf("pipeline: postgres: %w", err)
		}
	}
	return f(p.admin)
}

// WAL is the server's write-ahead log position, in bytes from its start:
// the difference of two readings is the WAL written in between, by every
// database of the server (the benchmark's alone, on a quiet server).
func (p *Pipeline) WAL(ctx context.Context) (int64, error) {
	var n int64
	err := p.withAdmin(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint`).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("pipeline: wal position: %w", err)
	}
	return n, nil
}

// Admin runs f on the pipeline's own connection, as Check does: its
// search_path is not the pipeline's schema, so f names the schema (Schema).
func (p *Pipeline) Admin(ctx context.Context, f func(*pgx.Conn) error) error {
	return p.withAdmin(ctx, f)
}

// Analyze updates the planner's statistics of the pipeline's tables
// (ANALYZE), as autovacuum does on a server that has run a while: until
// then, the plans Postgres keeps for a prepared statement were made while
// the tables held the first few rows, and a join that suits a table of a
// few rows (a hash join over a sequential scan) stands while it grows.
func (p *Pipeline) Analyze(ctx context.Context) error {
	return p.withAdmin(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1`, p.Schema)
		if err != nil {
			return fmt.Errorf("pipeline: analyze: %w", err)
		}
		tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var t string
			err := r.Scan(&t)
			return pgx.Identifier{p.Schema, t}.Sanitize(), err
		})
		if err != nil || len(tables) == 0 {
			return err
		}
		if _, err := c.Exec(ctx, "ANALYZE "+strings.Join(tables, ", ")); err != nil {
			return fmt.Errorf("pipeline: analyze: %w", err)
		}
		return nil
	})
}

// Backends returns the pids of the Postgres backends serving the
// connections of labels (pg_stat_activity by database and
// application_name). Each label must have at least one: a program that
// sets its own application_name would otherwise go unmeasured.
func (p *Pipeline) Backends(labels ...string) ([]int, error) {
	byLabel, err := p.BackendsOf(labels...)
	var pids []int
	for _, l := range labels {
		pids = append(pids, byLabel[l]...)
	}
	return pids, err
}

// BackendsOf is Backends by label.
func (p *Pipeline) BackendsOf(labels ...string) (map[string][]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	labelOf := make(map[string]string, len(labels))
	names := make([]string, len(labels))
	for i, l := range labels {
		names[i] = p.AppName(l)
		labelOf[names[i]] = l
	}
	byLabel := map[string][]int{}
	err := p.withAdmin(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT pid, application_name FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = ANY($1)`, names)
		if err != nil {
			return fmt.Errorf("pipeline: backends: %w", err)
		}
		var pid int
		var name string
		_, err = pgx.ForEachRow(rows, []any{&pid, &name}, func() error {
			byLabel[labelOf[name]] = append(byLabel[labelOf[name]], pid)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	for i, l := range labels {
		if len(byLabel[l]) == 0 {
			return nil, fmt.Errorf("pipeline: no Postgres backend of %s (application_name %s): does it set an application_name of its own?", l, names[i])
		}
	}
	return byLabel, nil
}

// Meter returns a meter of every running program by name, the Postgres
// backends of the running services (Postgres, with the backends of each
// service as its parts) and the benchmark's process (Bench). The services
// are those running now.
func (p *Pipeline) Meter() *procstat.Meter {
	m := &procstat.Meter{}
	var services []string
	for _, pr := range p.procs {
		m.AddPID(pr.Name, pr.PID())
		if pr.Name != NATSServer {
			services = append(services, pr.Name)
		}
	}
	if len(services) > 0 {
		services = slices.Clone(services)
		m.AddParts(Postgres, func() (map[string][]int, error) { return p.BackendsOf(services...) })
	}
	m.AddPID(Bench, os.Getpid())
	return m
}
