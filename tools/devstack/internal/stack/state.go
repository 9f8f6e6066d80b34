package stack

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// stateFile is where devstack remembers, in its data directory, what must
// stay the same across its runs.
const stateFile = "devstack.json"

// state is what devstack remembers across runs.
type state struct {
	// NATSPort is the port NATS listened on last: tried first, so that an
	// exported NATS_URL stays right when the default port is taken.
	NATSPort int `json:"nats_port,omitempty"`
	// PostgresPort is the port of devstack's own Postgres, kept for the
	// same reason.
	PostgresPort int `json:"postgres_port,omitempty"`
	// DatabaseURL is the database devstack created on a Postgres outside
	// its data directory, which reset drops.
	DatabaseURL string `json:"database_url,omitempty"`
}

func loadState(dataDir string) (state, error) {
	var st state
	b, err := os.ReadFile(filepath.Join(dataDir, stateFile)) // #nosec G304 -- the state file in the data directory devstack was given
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("stack: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("stack: %s: %w", filepath.Join(dataDir, stateFile), err)
	}
	return st, nil
}

// save writes st whole: to a temporary file, renamed over the old one.
func (st state) save(dataDir string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dataDir, stateFile+".*")
	if err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("stack: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dataDir, stateFile)); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	return nil
}
