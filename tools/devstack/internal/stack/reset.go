package stack

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/blobref/blobref/internal/pgserver"
)

// Reset removes what devstack keeps, together: its data directory (the
// JetStream store, the blobs, its own Postgres) and the database it created
// on the machine's Postgres. A half reset (blobs gone, markers still there)
// would answer a retried upload "completed" with a reference to a blob that
// no longer exists, so Reset drops the database first and removes nothing
// when it cannot. It refuses while a devstack runs on the data directory,
// and when DATABASE_URL names a database of the user's, which it does not
// touch.
func Reset(ctx context.Context, cfg Config) error {
	out := newOutput(cfg.Out, []string{"devstack"})
	if cfg.DatabaseURL != "" {
		return fmt.Errorf("stack: DATABASE_URL is set (%s): reset drops only the database devstack made for itself; "+
			"empty that one yourself (e.g. DROP SCHEMA public CASCADE), then run reset without DATABASE_URL, or remove %s",
			redact(cfg.DatabaseURL), cfg.DataDir)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := loadState(cfg.DataDir)
	if err != nil {
		return err
	}

	// The database on the machine's Postgres: the one devstack recorded,
	// or, on a data directory that recorded none, one of devstack's name.
	dbURL := st.DatabaseURL
	if dbURL == "" && listening(cfg.PostgresAddr) {
		host, port, _ := net.SplitHostPort(cfg.PostgresAddr)
		p, _ := strconv.Atoi(port)
		dbURL = postgresURL(host, p, cfg.Database)
	}
	if dbURL != "" {
		if err := dropDatabase(ctx, dbURL); err != nil {
			return fmt.Errorf("stack: %s: %w (nothing removed; start that Postgres and run reset again)", redact(dbURL), err)
		}
		out.printf("devstack", "dropped %s", redact(dbURL))
	}

	// devstack's own Postgres, if a devstack killed without stopping it
	// left it running.
	if err := pgserver.StopLeftover(ctx, filepath.Join(cfg.DataDir, "postgres")); err != nil {
		return fmt.Errorf("stack: stop devstack's own Postgres: %w", err)
	}
	// The lock file goes too: this process holds it open until it returns.
	if err := os.RemoveAll(cfg.DataDir); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	out.printf("devstack", "removed %s", cfg.DataDir)
	return nil
}
