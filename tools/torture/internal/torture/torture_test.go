package torture

import (
	"context"
	"flag"
	"os"
	"strings"
	"testing"
)

var long = flag.Bool("long", false, "run the long profiles (≥5000 uploads, ≥100 kills) instead of the short ones")

// binDir holds the binaries built once for every run of the package.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "torture-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func runProfile(t *testing.T, cfg Config) {
	cfg.BinDir = binDir
	cfg.Log = t.Output()
	res, err := Run(context.Background(), cfg)
	if res != nil && res.Report != nil {
		var b strings.Builder
		res.Print(&b)
		t.Log("\n" + b.String())
	}
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	rp := res.Report
	if got := len(rp.Lost); got != 0 {
		t.Errorf("lost: got %d, want 0", got)
	}
	if got := len(rp.DupBlobWrites) + len(rp.DupRefInserts) + len(rp.RefRewrites) + len(rp.ObjectsRemoved); got != 0 {
		t.Errorf("duplicated or rewritten side effects: got %d, want 0", got)
	}
	if got := len(rp.Dangling); got != 0 {
		t.Errorf("dangling references: got %d, want 0", got)
	}
	if got := len(rp.DigestMismatch); got != 0 {
		t.Errorf("digest mismatches: got %d, want 0", got)
	}
	if got := len(rp.Regressions); got != 0 {
		t.Errorf("regressions: got %d, want 0", got)
	}
	if got := len(rp.Unexpected) + len(rp.PoisonNotDead) + len(rp.Inconsistent); got != 0 {
		t.Errorf("unexpected dead letters, poison not dead-lettered, inconsistencies: got %d, want 0", got)
	}
	if len(res.UnexpectedExits) != 0 || len(res.LoadErrors) != 0 || !res.Settled {
		t.Errorf("unexpected exits %d, load errors %d, settled %v: want 0, 0, true", len(res.UnexpectedExits), len(res.LoadErrors), res.Settled)
	}
	// The run did what it was asked to: otherwise the zeros prove little.
	if got := res.AcceptedHTTP + res.AcceptedDirect; got < cfg.Uploads {
		t.Errorf("accepted: got %d, want ≥ %d", got, cfg.Uploads)
	}
	if res.AcceptedHTTP == 0 || res.AcceptedDirect == 0 || res.Republishes == 0 || res.Poison == 0 {
		t.Errorf("http %d, direct %d, republishes %d, poison %d: want each > 0", res.AcceptedHTTP, res.AcceptedDirect, res.Republishes, res.Poison)
	}
	if res.Kills() < cfg.Kills || res.Kills() == res.RandomKills {
		t.Errorf("kills: got %d (%d at failpoints), want ≥ %d with some at failpoints", res.Kills(), res.Kills()-res.RandomKills, cfg.Kills)
	}
	if res.NATSRestarts != cfg.NATSRestarts || res.LeaderKills != cfg.LeaderKills || res.PGRestarts["fast"]+res.PGRestarts["immediate"] != cfg.PGRestarts {
		t.Errorf("nats restarts %d, leader kills %d, postgres restarts %v: want %d, %d, %d", res.NATSRestarts, res.LeaderKills, res.PGRestarts, cfg.NATSRestarts, cfg.LeaderKills, cfg.PGRestarts)
	}
	if rp.Completed == 0 {
		t.Error("completed: got 0")
	}
	if t.Failed() {
		t.Logf("run directory kept: %s (logs/)", res.Dir)
	}
}

// TestTortureShort is the fixed-seed single-node run (go test -long for the long one).
func TestTortureShort(t *testing.T) {
	cfg := Short()
	if *long {
		cfg = Long()
	}
	runProfile(t, cfg)
}

// TestClusterShort is the fixed-seed three-node cluster run.
func TestClusterShort(t *testing.T) {
	runProfile(t, ClusterProfile(*long))
}
