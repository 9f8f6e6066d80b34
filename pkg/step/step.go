// Package step is blobref's consumer runtime: it runs one side effect for each
// message of a durable JetStream pull consumer, so that a redelivered or
// republished event runs only the steps not yet finished. Another team's
// service adds a side effect to the pipeline with it: a Step declares the
// effect, a Runner runs it (package stepservice makes it a service, package
// steptest tests it against real servers).
//
// The runner works on batches. It pulls messages into a bounded in-flight
// window and groups those that arrive together (up to BatchSize, waiting at
// most BatchWait for a batch to fill, and not at all when nothing more is
// pending and no other batch runs); MaxBatches batches run at once, and while they run the next one
// grows. For each batch it does, in order:
//
//	decode → look up the markers and claim the unfinished (one round trip;
//	         none for a ReadOnly step's first deliveries)
//	       → run the side effects (Concurrency at once)
//	       → record their markers and give up their claims (one transaction,
//	         with the step's own writes; one round trip without them, or
//	         when the step queues them: QueueInTx)
//	       → publish the events they emit, if any (asynchronously, Nats-Msg-Id
//	         derived from each input) → wait for every PubAck → ack the inputs
//
// So a batch costs the same few round trips whatever its size, and a batch
// of one pays for nothing it does not need.
//
// An input is acked only after JetStream acknowledged the event it caused. A
// step whose marker exists skips its side effect and re-emits its recorded
// result; a step that emits nothing (Emit nil) ends the chain. A transient
// failure is handed back with NakWithDelay and a growing back-off; an
// invalid or conflicting event, or one that used up its deliveries, is
// published to the dead-letter stream with its reason and then terminated.
// Each message of a batch has its own outcome, and every decision between
// Ack, Nak, NakWithDelay and Term is made in one place, settle.
//
// The runtime is one file per stage: the fetch window (fetch.go), the batch
// and the stages of its messages (batch.go), the side effects (effects.go),
// recording and emitting (record.go) and settling (settle.go).
//
// A failure that says a dependency is down or full (see Dependency and
// Unavailable) is an outage, not the message's: the runner stops fetching,
// probes the dependency until it answers, and excuses the deliveries spent
// meanwhile, so that they do not count toward MaxDeliveries.
//
// An event whose time is older than the retention horizon (the UPLOADS
// stream's max age, read from JetStream, plus RetentionMargin; see Horizon)
// is refused with reason expired before its marker is looked up: a
// retention job (PurgeRecords) may have deleted its markers, and the step
// must not run again for it.
//
// Recording, publishing and acking run on contexts that shutdown cannot
// cancel, so SIGTERM never falls between a side effect and its marker.
package step

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/blobref/blobref/pkg/events"
)

// Effect is the side effect of a step: a plain function from the consumed
// event to the result that its marker records.
type Effect[R any] func(ctx context.Context, ev *events.Event) (R, error)

// Item is a side effect done and about to be recorded: the event and the
// result its marker records.
type Item[R any] struct {
	Event  *events.Event
	Result R
}

// Step declares one side effect: what it consumes, the effect itself, and
// what it emits once done.
type Step[R any] struct {
	// Name identifies the step in markers, metrics, logs, failpoints and
	// dead letters.
	Name string
	// Consumes is the event type the step consumes. Its durable consumer
	// reads the type's subjects (events.EventType.Filter): the type must be
	// declared (events.Register) before the runner is made.
	Consumes string
	// Durable names the durable consumer the step reads [Name].
	Durable string
	// Effect performs the side effect of one event. It must be safe to run
	// again after a crash that left it done but unrecorded (deterministic
	// keys, conditional writes). The runner runs several at once.
	Effect Effect[R]
	// ReadOnly says the Effect writes nothing, anywhere, that InTx does not
	// (it checks and reads, and InTx writes its result): two runs of it at
	// once are harmless. The runner then spares a batch of first
	// deliveries its claim round trip: it runs the side effects without
	// claims or a marker look-up, and the markers' insert decides which
	// run is recorded; an event whose step is already done runs the Effect
	// again and is then skipped, re-emitting the recorded result as ever.
	// Should the Effect fail, the marker is looked up, and an existing one
	// skips the step instead of failing it. Once such a repeat is met (a
	// replay), batches take the claims and look markers up as usual, until
	// a look-up finds none; so does a batch with a message at its delivery
	// limit. blobref_step_effects_total
	// counts a ReadOnly step's side effects once recorded, not each run.
	ReadOnly bool
	// InTx, if set, writes what must commit atomically with the markers. It
	// runs in the markers' transaction with the items whose markers this
	// runner inserted, all of a batch at once. It returns nil or one error
	// per item: items with an error are left out (and settled with it) and
	// the transaction runs again without them. Its own error fails the batch.
	InTx func(ctx context.Context, tx pgx.Tx, items []Item[R]) ([]error, error)
	// QueueInTx, if set with InTx, queues on b the writes InTx makes, for
	// a batch whose markers are all new (the usual case): the runner sends
	// them with the markers' insert and the commit, and the record costs
	// one round trip instead of two plus InTx's. Their results are not read
	// before the commit, so what it queues must fail on the server rather
	// than skip or refuse an item (insert without ON CONFLICT DO NOTHING:
	// a row already there is an error). Should anything fail, the
	// transaction rolls back, and the batch is recorded again through InTx,
	// which tells which items to skip and which to refuse.
	QueueInTx func(b *pgx.Batch, items []Item[R])
	// Emit, if set, builds the event to publish once the step is done, from
	// the consumed event and the recorded result: an event of any declared
	// type (events.Follow builds one). A step without Emit ends the chain.
	Emit func(ev *events.Event, r R) (*events.Event, error)
	// AfterRecord, if set, runs for each event whose marker exists with its
	// fingerprint (the step done now or before), before its event is
	// emitted and its message acked: clean-up that must wait for the marker, such as
	// removing a claim check the step no longer needs. It must be safe to
	// run more than once. Its error is logged and never fails the step.
	AfterRecord func(ctx context.Context, ev *events.Event) error
	// Probes are the step's own dependencies (such as "bucket") by name,
	// each with a probe the runner calls while it is down. The runner
	// probes Postgres and JetStream itself. The Effect names the
	// dependency its errors come from with Dependency or Unavailable.
	Probes map[string]Probe
}

// Consumer is the durable consumer the step reads: Durable (or Name) on the
// subjects of the type it consumes.
func (s Step[R]) Consumer() (events.ConsumerSpec, error) {
	t, ok := events.Lookup(s.Consumes)
	if !ok {
		return events.ConsumerSpec{}, fmt.Errorf("step: step %s consumes %q, which is not a declared event type", s.Name, s.Consumes)
	}
	durable := s.Durable
	if durable == "" {
		durable = s.Name
	}
	return events.ConsumerSpec{Step: s.Name, Consumes: s.Consumes, Durable: durable, FilterSubject: t.Filter()}, nil
}
