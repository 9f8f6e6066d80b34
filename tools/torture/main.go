// Command torture is blobref's crash-safety torture run: the real services,
// two replicas each, under a steady upload load while their processes are
// SIGKILLed at random times and at armed failpoints, JetStream and Postgres
// are restarted (or, with -cluster, a node and then the stream leader of a
// three-node cluster are killed); then it lets the pipeline settle and checks
// every invariant of the design. See package internal/torture.
//
//	go run ./tools/torture                 # the short, fixed-seed run
//	go run ./tools/torture -long           # ≥5000 uploads, ≥100 kills, 10 NATS and 5 Postgres restarts
//	go run ./tools/torture -cluster        # the three-node cluster run
//
// It exits 1 when an invariant is broken.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/blobref/blobref/pkg/step/stepservice/buildinfo"
	"github.com/blobref/blobref/tools/torture/internal/torture"
)

func main() {
	short := torture.Short()
	var cfg torture.Config
	long := flag.Bool("long", false, "the long run: "+torture.Long().String())
	flag.Int64Var(&cfg.Seed, "seed", short.Seed, "random seed (load, chaos and failpoint choices)")
	flag.IntVar(&cfg.Uploads, "uploads", 0, "accept at least this many uploads (default: the profile's)")
	flag.IntVar(&cfg.Kills, "kills", 0, "kill service processes at least this many times")
	flag.IntVar(&cfg.NATSRestarts, "nats-restarts", 0, "JetStream restarts (with -cluster: random node kills)")
	flag.IntVar(&cfg.LeaderKills, "leader-kills", 0, "with -cluster: kills of the UPLOADS stream leader")
	flag.IntVar(&cfg.PGRestarts, "pg-restarts", 0, "Postgres restarts, alternately crash (-m immediate) and clean (-m fast)")
	flag.BoolVar(&cfg.Cluster, "cluster", false, "run against a three-node JetStream cluster with R3 streams")
	flag.IntVar(&cfg.Rate, "rate", 0, "new uploads per second, at most")
	flag.DurationVar(&cfg.Settle, "settle-timeout", 0, "how long the pipeline may take to settle after the load")
	flag.StringVar(&cfg.Dir, "keep", "", "keep the run's directory (logs, bucket, stores) at this path")
	version := flag.Bool("version", false, "print how torture was built and exit")
	flag.Parse()
	if *version {
		fmt.Println(buildinfo.Version("torture"))
		return
	}

	profile := short
	if *long {
		profile = torture.Long()
	}
	if cfg.Cluster {
		profile = torture.ClusterProfile(*long)
	}
	cfg = profile.Merge(cfg)
	cfg.Keep = cfg.Dir != ""
	cfg.Log = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := torture.Run(ctx, cfg)
	if res != nil && res.Report != nil {
		res.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "torture:", err)
		os.Exit(2)
	}
	if len(res.Failed()) > 0 {
		os.Exit(1)
	}
}
