package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/blobref/blobref/internal/pgserver"
)

// Where devstack's own database lives when DATABASE_URL is not set.
const (
	// DefaultPostgresAddr is the machine's Postgres, used when something
	// listens there.
	DefaultPostgresAddr = "127.0.0.1:5432"
	// DefaultDatabase is the database devstack creates for itself.
	DefaultDatabase = "blobref_dev"
)

// dbTimeout bounds each attempt to reach Postgres: a wrong DATABASE_URL
// stops devstack within seconds, with the reason. ddlTimeout bounds
// creating or dropping a database once connected, which waits for a
// checkpoint.
const (
	dbTimeout  = 5 * time.Second
	ddlTimeout = time.Minute
)

// database is the Postgres the services use, as the stack found or started
// it.
type database struct {
	url  string
	what string // how the stack's output describes it
	// stop stops devstack's own Postgres; nil for any other.
	stop func() error
}

// openDatabase decides which Postgres the services use: DATABASE_URL when
// set; else devstack's own database on the machine's Postgres when one
// listens on PostgresAddr; else a private Postgres of devstack's own,
// started from the machine's binaries with its cluster under DataDir. It
// creates devstack's database where missing and checks that the services
// will be able to connect.
func (s *Stack) openDatabase(ctx context.Context, st *state) (*database, error) {
	if s.cfg.DatabaseURL != "" {
		if err := ping(ctx, s.cfg.DatabaseURL); err != nil {
			return nil, fmt.Errorf("stack: DATABASE_URL %s: %w", redact(s.cfg.DatabaseURL), err)
		}
		return &database{url: s.cfg.DatabaseURL, what: "DATABASE_URL " + redact(s.cfg.DatabaseURL)}, nil
	}
	if listening(s.cfg.PostgresAddr) {
		host, port, _ := net.SplitHostPort(s.cfg.PostgresAddr)
		p, _ := strconv.Atoi(port)
		url := postgresURL(host, p, s.cfg.Database)
		if err := ensureDatabase(ctx, url); err != nil {
			return nil, fmt.Errorf("stack: the Postgres on %s (DATABASE_URL is not set): %w; set DATABASE_URL to a Postgres of yours", s.cfg.PostgresAddr, err)
		}
		st.DatabaseURL = url
		return &database{url: url, what: fmt.Sprintf("database %s on the Postgres at %s", s.cfg.Database, s.cfg.PostgresAddr)}, nil
	}

	dir := filepath.Join(s.cfg.DataDir, "postgres")
	s.out.printf("devstack", "DATABASE_URL is not set and nothing listens on %s: starting a Postgres of devstack's own (data in %s)", s.cfg.PostgresAddr, dir)
	port := st.PostgresPort
	if port != 0 && portFree("127.0.0.1", port) != nil {
		port = 0
	}
	pg, err := pgserver.Start(ctx, pgserver.Config{Dir: dir, Port: port})
	if errors.Is(err, pgserver.ErrNoBinaries) {
		return nil, fmt.Errorf("stack: DATABASE_URL is not set, nothing listens on %s, and there is no Postgres server here to run one (%w): %s; or set DATABASE_URL to a Postgres of yours",
			s.cfg.PostgresAddr, err, pgserver.InstallHint)
	}
	if err != nil {
		return nil, fmt.Errorf("stack: devstack's own Postgres: %w", err)
	}
	st.PostgresPort = pg.Port
	db := &database{url: pg.URL(s.cfg.Database), stop: pg.Stop,
		what: fmt.Sprintf("database %s on devstack's own Postgres, port %d (data in %s, log %s)", s.cfg.Database, pg.Port, dir, pg.LogPath())}
	if err := ensureDatabase(ctx, db.url); err != nil {
		_ = pg.Stop()
		return nil, fmt.Errorf("stack: devstack's own Postgres: %w", err)
	}
	return db, nil
}

func postgresURL(host string, port int, database string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: "/" + database, RawQuery: "sslmode=disable"}
	return u.String()
}

// listening reports whether something accepts TCP connections on addr.
func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// ping connects to the database at url once.
func ping(ctx context.Context, url string) error {
	conn, err := connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	return conn.Ping(ctx)
}

// maintenance returns the URL of the postgres database on the server of
// the database url names, and that database's name.
func maintenance(dbURL string) (string, string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "", "", err
	}
	name := u.Path[min(1, len(u.Path)):]
	u.Path = "/postgres"
	return u.String(), name, nil
}

// connect connects to url within dbTimeout.
func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	return pgx.Connect(ctx, url)
}

// ensureDatabase creates the database url names when its server lacks it.
func ensureDatabase(ctx context.Context, dbURL string) error {
	admin, name, err := maintenance(dbURL)
	if err != nil {
		return err
	}
	conn, err := connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ctx, cancel := context.WithTimeout(ctx, ddlTimeout)
	defer cancel()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look for database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: created meanwhile
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// dropDatabase drops the database url names, with its connections.
func dropDatabase(ctx context.Context, dbURL string) error {
	admin, name, err := maintenance(dbURL)
	if err != nil {
		return err
	}
	conn, err := connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ctx, cancel := context.WithTimeout(ctx, ddlTimeout)
	defer cancel()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}
