package torture

import (
	"fmt"
	"time"
)

// Short is the fixed-seed single-node run CI does (TestTortureShort): small
// enough for a couple of minutes with race-enabled binaries on two cores.
func Short() Config {
	return Config{Seed: 1, Uploads: 300, Kills: 16, NATSRestarts: 2, PGRestarts: 2, Rate: 30, ChaosPause: 700 * time.Millisecond, Settle: 2 * time.Minute}
}

// Long is the long single-node run: at least 5,000 uploads, 100 process
// kills, 10 JetStream restarts and 5 Postgres restarts.
func Long() Config {
	return Config{Seed: 1, Uploads: 5000, Kills: 110, NATSRestarts: 10, PGRestarts: 5, Rate: 60, ChaosPause: 800 * time.Millisecond, Settle: 5 * time.Minute}
}

// ClusterProfile is the three-node cluster run: random node kills, then
// stream leader kills; the short one is TestClusterShort.
func ClusterProfile(long bool) Config {
	if long {
		return Config{Seed: 2, Cluster: true, Uploads: 2000, Kills: 40, NATSRestarts: 3, LeaderKills: 3, PGRestarts: 2, Rate: 40, ChaosPause: 800 * time.Millisecond, Settle: 5 * time.Minute}
	}
	return Config{Seed: 2, Cluster: true, Uploads: 200, Kills: 8, NATSRestarts: 1, LeaderKills: 1, PGRestarts: 1, Rate: 25, ChaosPause: 700 * time.Millisecond, Settle: 2 * time.Minute}
}

// Merge returns p with every non-zero setting of o put over it.
func (p Config) Merge(o Config) Config {
	set := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	set(&p.Uploads, o.Uploads)
	set(&p.Kills, o.Kills)
	set(&p.NATSRestarts, o.NATSRestarts)
	set(&p.LeaderKills, o.LeaderKills)
	set(&p.PGRestarts, o.PGRestarts)
	set(&p.Rate, o.Rate)
	set(&p.Replicas, o.Replicas)
	if o.Seed != 0 {
		p.Seed = o.Seed
	}
	if o.Settle != 0 {
		p.Settle = o.Settle
	}
	if o.ChaosPause != 0 {
		p.ChaosPause = o.ChaosPause
	}
	if o.Cluster {
		p.Cluster = true
	}
	p.Dir, p.Keep, p.BinDir, p.Log = o.Dir, o.Keep, o.BinDir, o.Log
	return p
}

// String summarises the profile.
func (p Config) String() string {
	s := fmt.Sprintf("seed %d, %d uploads, %d kills, %d NATS restarts, %d Postgres restarts", p.Seed, p.Uploads, p.Kills, p.NATSRestarts, p.PGRestarts)
	if p.Cluster {
		s += fmt.Sprintf(", 3-node cluster, %d leader kills", p.LeaderKills)
	}
	return s
}
