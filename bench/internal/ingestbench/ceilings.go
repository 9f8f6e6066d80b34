package ingestbench

import (
	"fmt"
	"io"
	"time"

	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"
	"github.com/blobref/blobref/bench/internal/texttable"
)

// The HTTP accept floor and the ceilings it sets on this machine, beside
// the targets a missed one is judged against.

// floorCosted are the processes the accept floor's CPU is, in the report's
// order.
var floorCosted = []string{pipeline.HTTPFloor, pipeline.NATSServer, pipeline.Postgres}

// floorCost is the accept floor's CPU time per upload of usage over n
// uploads: httpfloor, its nats-server and its Postgres backends.
func floorCost(u procstat.Usage, n int) time.Duration { return perUpload(u, n, floorCosted) }

// ceiling is what one round's accept floor and bulk phase imply.
type ceiling struct {
	// CPU µs per upload: the bulk path, the accept floor, their sum (the
	// HTTP path's CPU floor) and the floor phase's clients.
	bulk, accept, http, clients float64
	// ratio is http over bulk.
	ratio float64
	// referenced and accepted are the ceilings, uploads/s.
	referenced, accepted float64
}

// ceilingOf derives round rd's ceilings on cpus CPUs; false without its
// floor or bulk phase, or without CPU read over them.
func ceilingOf(rd Round, cpus int) (ceiling, bool) {
	if rd.Floor == nil || rd.Bulk == nil || cpus < 1 {
		return ceiling{}, false
	}
	c := ceiling{
		bulk:    us(cost(rd.Bulk.Usage, rd.Bulk.N)),
		accept:  us(floorCost(rd.Floor.Usage, rd.Floor.N)),
		clients: us(rd.Floor.Per(pipeline.Bench).Total()),
	}
	if c.bulk <= 0 || c.accept <= 0 {
		return ceiling{}, false
	}
	c.http = c.bulk + c.accept
	c.ratio = c.http / c.bulk
	c.referenced = float64(cpus) * 1e6 / (c.http + c.clients)
	c.accepted = float64(cpus) * 1e6 / (c.accept + c.bulk)
	return c, true
}

// ceilings are the ceilings of v's rounds that have them.
func (r *Report) ceilings(v *Variant) []ceiling {
	var out []ceiling
	for _, rd := range v.Rounds {
		if c, ok := ceilingOf(rd, r.Machine.CPUs); ok {
			out = append(out, c)
		}
	}
	return out
}

// floors are the rounds' accept floor phases.
func (v *Variant) floors() []Level { return v.phases(func(r Round) *Level { return r.Floor }) }

// writeFloor writes the accept floor's table and the ceilings, each beside
// its target and the figure measured.
func (r *Report) writeFloor(w io.Writer, line func(string, ...any), v *Variant) {
	ls := v.floors()
	if len(ls) == 0 {
		return
	}
	line("HTTP accept floor (httpfloor), done at 202")
	checked := writeFloorPhase(w, ls, "accepted/s", floorCosted)
	line("checked after the phase: the counts of rows and messages, and %d uploads' row and message (sha256 of the bytes): all whole", checked)

	cs := r.ceilings(v)
	if len(cs) == 0 {
		line("ceilings: none (they need the bulk phase in the same round, and CPU read over both)")
		return
	}
	med := func(f func(ceiling) float64) float64 { return summarize(cs, f).Median }
	cpus := r.Machine.CPUs
	rounds := "1 round"
	if len(cs) > 1 {
		rounds = fmt.Sprintf("the median of %d rounds, each figure its own, so the parts need not add up", len(cs))
	}
	line("ceilings on this machine (%d CPUs), from each round's accept floor and bulk phase (%s):", cpus, rounds)
	line("  HTTP CPU floor per upload: bulk %.0f + accept floor %.0f = %.0f µs, %.2f× bulk", med(func(c ceiling) float64 { return c.bulk }),
		med(func(c ceiling) float64 { return c.accept }), med(func(c ceiling) float64 { return c.http }), med(func(c ceiling) float64 { return c.ratio }))
	ratio := med(func(c ceiling) float64 { return c.ratio })
	ratioReach := "within reach (the floor is under it)"
	if ratio > TargetCPUOfBulk {
		ratioReach = "OUT OF REACH on this machine (the floor alone is over it)"
	}
	line("    target HTTP CPU ≤ %.0f× the bulk path's: %s%s", TargetCPUOfBulk, ratioReach, r.measuredRatio(v))
	referenced := med(func(c ceiling) float64 { return c.referenced })
	line("  referenced ceiling: %d × 1e6 / (HTTP CPU floor %.0f + clients %.0f µs) = %.0f uploads/s", cpus,
		med(func(c ceiling) float64 { return c.http }), med(func(c ceiling) float64 { return c.clients }), referenced)
	line("    target ≥ %d uploads/s referenced at 64 clients: %s%s", TargetRate64, reach(TargetRate64 <= referenced), measuredRate(r.level(v, 64)))
	accepted := med(func(c ceiling) float64 { return c.accepted })
	line("  accepted ceiling: %d × 1e6 / (accept floor %.0f + bulk %.0f µs) = %.0f uploads/s", cpus,
		med(func(c ceiling) float64 { return c.accept }), med(func(c ceiling) float64 { return c.bulk }), accepted)
	var accepts []Level
	if r.Config.AcceptClients == 64 {
		accepts = v.accepts()
	}
	line("    target ≥ %d uploads/s accepted at 64 clients: %s%s", TargetAcceptRate64, reach(TargetAcceptRate64 <= accepted), measuredRate(accepts))
}

// writeFloorPhase writes the table of a floor's phases ls: the clients, the
// rate (headed rate), the latencies, the CPU per upload of each of costed
// and their total, the clients' and the rest of the machine's; it returns
// how many uploads the checks after the phases looked at.
func writeFloorPhase(w io.Writer, ls []Level, rate string, costed []string) (checked int) {
	var t texttable.Table
	t.Row(append(append([]string{"  clients", rate, "p50 ms", "p99 ms"}, costed...), "total µs", "bench", "other")...)
	cells := []string{fmt.Sprintf("  %d", ls[0].Clients),
		summarize(ls, Level.Rate).WithSpread("%.0f"),
		summarize(ls, func(l Level) float64 { return ms(l.Latency[0]) }).WithSpread("%.1f"),
		summarize(ls, func(l Level) float64 { return ms(l.Latency[1]) }).WithSpread("%.1f")}
	for _, name := range costed {
		cells = append(cells, medianCell(summarize(ls, func(l Level) float64 { return us(l.Per(name).Total()) }), "%.0f"))
	}
	cells = append(cells,
		summarize(ls, func(l Level) float64 { return us(perUpload(l.Usage, l.N, costed)) }).WithSpread("%.0f"),
		medianCell(summarize(ls, func(l Level) float64 { return us(l.Per(pipeline.Bench).Total()) }), "%.0f"),
		medianCell(summarize(ls, func(l Level) float64 { return us(l.Usage.Other / time.Duration(l.N)) }), "%.0f"))
	t.Row(cells...)
	t.Write(w)
	for _, l := range ls {
		checked += l.Checked.Uploads
	}
	return checked
}

// reach says whether a target is within what the floor leaves possible.
func reach(ok bool) string {
	if ok {
		return "within the ceiling"
	}
	return "OUT OF REACH on this machine"
}

// measuredRatio is "; measured N×", the median CPU ratio of the HTTP path
// at 64 clients to the bulk path, or "" when not measured.
func (r *Report) measuredRatio(v *Variant) string {
	if s := r.cpuRatios(v, 64); s.N > 0 {
		return fmt.Sprintf("; measured %.2f×", s.Median)
	}
	return ""
}

// measuredRate is "; measured N/s", the median rate of ls, or "" for none.
func measuredRate(ls []Level) string {
	if len(ls) == 0 {
		return ""
	}
	return fmt.Sprintf("; measured %.0f/s", summarize(ls, Level.Rate).Median)
}

// writeFloorLegend says what the accept floor and the ceilings include and
// leave out.
func (r *Report) writeFloorLegend(line func(string, ...any)) {
	c := r.Config
	line("HTTP accept floor: the least any HTTP front door does per upload to answer 202 under the accept contract (the")
	line("request durable in Postgres and stored in JetStream), measured in each round on a pipeline of its own: a nats-server")
	line("started as the others are, a fresh schema, and httpfloor (bench/cmd/httpfloor), a process of its own built as the")
	line("services are. It reads the body; inserts (id, body) into a table of its own with group commit (one INSERT … SELECT FROM")
	line("unnest per batch of the requests waiting: one round trip, one commit; the body kept in the row); at the same time")
	line("publishes the body to a stream of its own (PublishMsgAsync, awaiting the ack); and answers 202 with the id in Location.")
	line("It has no auth, JSON, CloudEvent, idempotency (no key look-up, no Nats-Msg-Id), outbox update after the publish,")
	line("request log or metrics, and no pipeline behind it. Its load is accept only's requests: %d uploads from %d clients,", c.Uploads, c.FloorClients())
	line("each done at its 202, after %d unmeasured.", c.Warmup)
	line("  accepted/s, p50, p99: as for accept only")
	line("  httpfloor, nats-server, postgres (the backends of httpfloor's connections): CPU µs per upload, read as for the")
	line("  services; total µs: the three, the accept floor's CPU; bench: its clients; other: the rest of the machine")
	line("Ceilings: derived in each round from that round's phases, then the median of the rounds")
	line("  HTTP CPU floor = the bulk path's total + the accept floor's total, per upload: a front door that costs no more than")
	line("    the floor, ahead of the pipeline as it runs in bulk. It leaves out what the HTTP path does beyond both (ingest's")
	line("    work over the floor's; telling a waiting client of its completion, Prefer: wait; the completed events' fan-out to")
	line("    ingest; consumer batches smaller than in bulk) and counts one thing twice: JetStream storing the request, by the")
	line("    bulk producer's publish and by the floor's (subtract the floor's nats-server figure for a stricter floor)")
	line("  referenced ceiling = CPUs × 1e6 / (HTTP CPU floor + the floor phase's bench CPU per upload): uploads/s with every")
	line("    CPU doing that work and nothing else, with clients as cheap as the floor's (the HTTP path's clients also retry and")
	line("    decode JSON); an upper bound that leaves out latency, locks, fsync waits and other work on the machine")
	line("  accepted ceiling = CPUs × 1e6 / (accept floor + bulk path, per upload), as the pipeline runs behind the 202s during")
	line("    accept only. It leaves out the clients (with them it is the referenced ceiling) and holds in a steady state: over")
	line("    a short phase the consumers can fall behind and finish after the last 202, and the measured rate exceed it")
	line("  within the ceiling (within reach), OUT OF REACH: whether the target is at or under the ceiling (for the ratio: at or")
	line("    over the floor's); \"measured\" is the figure the targets below hold against it")
}
