package throughput

import (
	"time"

	"github.com/blobref/blobref/bench/internal/floors"
	"github.com/blobref/blobref/bench/internal/stats"
)

// A floor does part of a stage's work and nothing else, so it can cost no
// more than the process that does that work in the pipeline; one that does
// measured the machine's state (a file system slowed by earlier deletes,
// say), not the stage. Each floor is held against its stage in the
// pipeline run of the same round.

// FloorSpec names a floor, the part of it held against the pipeline, and
// the pipeline process that does the same work.
type FloorSpec struct {
	// Name is the floor's name in the report.
	Name string
	// Part is the floor's process held against the stage; "" for all of
	// them (the bucket floor runs in the benchmark's process only).
	Part string
	// Stage is the pipeline's process doing the part's work and more.
	Stage string
	runs  func(f *FloorResults, config string) []floors.Result
}

// FloorSpecs are the floors (a), (b) and (c).
var FloorSpecs = []FloorSpec{
	{"(a) JetStream", NATSServer, NATSServer, func(f *FloorResults, _ string) []floors.Result { return f.JetStream }},
	{"(b) bucket", "", BlobWriter, func(f *FloorResults, c string) []floors.Result { return f.Bucket[c] }},
	{"(c) Postgres rows", Postgres, Postgres, func(f *FloorResults, _ string) []floors.Result { return f.Postgres }},
}

// partCost is the CPU time per upload of the spec's part of r.
func (s FloorSpec) partCost(r floors.Result) time.Duration {
	if s.Part == "" {
		return r.TotalPerUpload().Total()
	}
	return r.PerUpload(s.Part).Total()
}

// FloorCheck is one floor's part in one round against its stage in the
// same round's run of a configuration, both per upload.
type FloorCheck struct {
	Spec   FloorSpec
	Config string
	// Round counts from 1.
	Round              int
	Floor, Stage       time.Duration
	FloorTotal, Capped time.Duration
}

// Above reports a floor that costs more than its stage: no floor.
func (c FloorCheck) Above() bool { return c.Floor > c.Stage }

// FloorChecks holds every floor of every round against its stage, for each
// configuration with runs and floors.
func (r *Report) FloorChecks() []FloorCheck {
	f := r.Floors
	if f == nil {
		return nil
	}
	var out []FloorCheck
	for _, cr := range r.Configs {
		for _, spec := range FloorSpecs {
			runs := spec.runs(f, cr.Name)
			for i := range min(len(runs), len(cr.Runs)) {
				c := FloorCheck{
					Spec: spec, Config: cr.Name, Round: i + 1,
					Floor: spec.partCost(runs[i]), Stage: cr.Runs[i].Per(spec.Stage).Total(),
					FloorTotal: runs[i].TotalPerUpload().Total(),
				}
				c.Capped = c.FloorTotal - c.Floor + min(c.Floor, c.Stage)
				out = append(out, c)
			}
		}
	}
	return out
}

// HonestFloor is a floor's CPU per upload for configuration config: the
// median over the rounds of its total, each round's part capped at its
// stage's cost in that round (rounds without a run of config count as
// measured). Capped is how many rounds were capped.
func (r *Report) HonestFloor(spec FloorSpec, config string) (cost time.Duration, capped int) {
	if r.Floors == nil {
		return 0, 0
	}
	runs := spec.runs(r.Floors, config)
	values := make([]float64, len(runs))
	for i, x := range runs {
		values[i] = float64(x.TotalPerUpload().Total())
	}
	for _, c := range r.FloorChecks() {
		if c.Spec.Name == spec.Name && c.Config == config {
			values[c.Round-1] = float64(c.Capped)
			if c.Above() {
				capped++
			}
		}
	}
	return time.Duration(stats.Summarize(values).Median), capped
}

// CeilingOf is the ceiling (uploads/s) of bucket configuration name from
// its honest floors, 0 without floors.
func (r *Report) CeilingOf(name string) float64 {
	if r.Floors == nil || len(r.Floors.Bucket[name]) == 0 {
		return 0
	}
	var costs []time.Duration
	for _, spec := range FloorSpecs {
		c, _ := r.HonestFloor(spec, name)
		costs = append(costs, c)
	}
	return Ceiling(r.Machine.CPUs, costs...)
}

// RepublishFloor is the least CPU a republished request of configuration
// name costs the machine, per event, from floors (a′) and (d): the median
// over the rounds. A republished request takes floor (a′)'s path (it is
// published again into a stream that holds the first pass, pulled, each
// step publishes its recorded result again and the next step pulls it,
// every message acked) and floor (d)'s (each step reads its marker), and
// more. In each round the floors' nats-server part counts at most at the
// republish's nats-server cost, their Postgres part at most at the
// republish's Postgres cost, and their client side at most at the
// republish's clients (blobwriter, refwriter and the producer), as a floor
// must cost no more than the work it stands for. Floor (a) stands in for
// (a′) in a report without it; without floor (d) it is (a′)'s alone; 0
// without floor (a) or a republish.
func (r *Report) RepublishFloor(name string) time.Duration {
	if r.Floors == nil {
		return 0
	}
	js := r.republishJetStreamFloor().results
	var values []float64
	for _, cr := range r.Configs {
		if cr.Name != name {
			continue
		}
		for i := range min(len(js), len(cr.Runs)) {
			rp := cr.Runs[i].Republish
			if rp == nil {
				continue
			}
			a := js[i]
			var d floors.Result
			if i < len(r.Floors.Lookups) {
				d = r.Floors.Lookups[i]
			}
			server := min(a.PerUpload(floors.NATSServer).Total(), rp.Per(NATSServer).Total())
			clients := a.PerUpload(floors.Bench).Total()
			if d.N > 0 {
				server += min(d.PerUpload(floors.PostgresServer).Total(), rp.Per(Postgres).Total())
				clients += d.PerUpload(floors.Bench).Total()
			}
			clients = min(clients, rp.Per(BlobWriter).Total()+rp.Per(RefWriter).Total()+rp.Per(Bench).Total())
			values = append(values, float64(server+clients))
		}
	}
	if len(values) == 0 {
		return 0
	}
	return time.Duration(stats.Summarize(values).Median)
}

// RepublishCeiling is the most republished events per second configuration
// name allows on the machine: the lower of cores over RepublishFloor and
// floor (a′)'s rate (the median over the rounds). JetStream takes a
// stream's messages on about one core, so floor (a′), the republish's
// messages with nothing else on a stream as long as the republish meets,
// runs at the most that stream carries here. 0 without a RepublishFloor.
func (r *Report) RepublishCeiling(name string) float64 {
	byCPU := Ceiling(r.Machine.CPUs, r.RepublishFloor(name))
	if byCPU == 0 {
		return 0
	}
	return min(byCPU, r.republishJetStreamFloor().rate())
}

// jetStreamFloor is one of floor (a)'s passes over the rounds.
type jetStreamFloor struct {
	label   string
	results []floors.Result
}

// rate is the floor's median rate over the rounds, uploads/s.
func (f jetStreamFloor) rate() float64 {
	return stats.Summarize(collect(f.results, floors.Result.Rate)).Median
}

// republishJetStreamFloor is the JetStream floor a republish is held
// against: (a′), the same messages published again into the stream floor
// (a) left, as a republish publishes them into the stream its first pass
// left. A longer stream, its message ids in the de-duplication window and
// the server's grown heap make each message cost nats-server more (nearly
// twice as much in some rounds here: docs/benchmarks.md), so floor (a) on a
// fresh stream would overstate what a republish can reach. Reports without
// (a′) fall back to (a).
func (r *Report) republishJetStreamFloor() jetStreamFloor {
	if len(r.Floors.JetStreamAgain) > 0 {
		return jetStreamFloor{"(a′)", r.Floors.JetStreamAgain}
	}
	return jetStreamFloor{"(a)", r.Floors.JetStream}
}

// floorARate is floor (a)'s rate, uploads/s: the median over the rounds.
func (r *Report) floorARate() float64 {
	return jetStreamFloor{"(a)", r.Floors.JetStream}.rate()
}
