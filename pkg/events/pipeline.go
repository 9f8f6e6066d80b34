package events

// The pipeline's steps and producers, each named once: the steps' names (in markers, metrics,
// failpoints and the Blobref-Dead-Step header of dead letters), the durable consumers they
// read and the CloudEvents sources of the events they publish.
const (
	// StepBlob is blobwriter's step: it stores the bytes of a requested upload.
	StepBlob = "blob"
	// StepRef is refwriter's step: it records the reference of a stored blob.
	StepRef = "ref"
	// StepNotify is notifier's step: it delivers a completed upload to its owner's webhooks.
	// It ends the chain: it emits no event.
	StepNotify = "notify"
)

// Sources of the events blobref's services publish.
const (
	// SourceIngest is the source of the requested events ingest publishes.
	SourceIngest = "/blobref/ingest"
	// SourceBlobWriter is the source of the blob_stored events blobwriter publishes.
	SourceBlobWriter = "/blobref/blobwriter"
	// SourceRefWriter is the source of the completed events refwriter publishes.
	SourceRefWriter = "/blobref/refwriter"
)

// Stored objects: blobwriter stores the bytes of upload id at DefaultKeyPrefix + id (or under
// the prefix it is configured with), with their sha256 in the object's metadata under
// MetadataSHA256; refwriter checks both before it references the object.
const (
	// DefaultKeyPrefix is the object key prefix of uploads.
	DefaultKeyPrefix = "uploads/"
	// MetadataSHA256 is the object metadata key holding the lowercase hex SHA-256 of the bytes.
	MetadataSHA256 = "sha256"
)

// ConsumerSpec names a step of the pipeline and the durable consumer it reads. Operators use
// these names.
type ConsumerSpec struct {
	// Step is the step's name.
	Step string
	// Consumes is the event type the step consumes.
	Consumes string
	// Durable is the durable consumer name.
	Durable string
	// FilterSubject is the subject filter on UPLOADS: the filter of the type it consumes.
	FilterSubject string
	// Stream is the stream the consumer reads; "" means UPLOADS (StreamName).
	Stream string
}

// StreamOrDefault is the stream the consumer reads.
func (s ConsumerSpec) StreamOrDefault() string {
	if s.Stream == "" {
		return StreamName
	}
	return s.Stream
}

var (
	// BlobWriterConsumer is blobwriter's consumer of requested events.
	BlobWriterConsumer = ConsumerSpec{Step: StepBlob, Consumes: TypeRequested, Durable: "blobwriter", FilterSubject: requestedType.Filter()}
	// RefWriterConsumer is refwriter's consumer of blob_stored events.
	RefWriterConsumer = ConsumerSpec{Step: StepRef, Consumes: TypeBlobStored, Durable: "refwriter", FilterSubject: blobStoredType.Filter()}
	// NotifierConsumer is notifier's consumer of completed events.
	NotifierConsumer = ConsumerSpec{Step: StepNotify, Consumes: TypeCompleted, Durable: "notifier", FilterSubject: completedType.Filter()}
)

// ingest's read model: the durable consumers that fold what happened to each upload into
// ingest's own table, which GET /v1/uploads reads. They run no step (Step is empty) and record
// only: blob_stored and completed events on UPLOADS, and every dead letter on UPLOADS_DLQ.
var (
	// IngestStoredConsumer is ingest's consumer of blob_stored events.
	IngestStoredConsumer = ConsumerSpec{Consumes: TypeBlobStored, Durable: "ingest-stored", FilterSubject: blobStoredType.Filter()}
	// IngestCompletedConsumer is ingest's consumer of completed events.
	IngestCompletedConsumer = ConsumerSpec{Consumes: TypeCompleted, Durable: "ingest-completed", FilterSubject: completedType.Filter()}
	// IngestDeadLetterConsumer is ingest's consumer of dead letters.
	IngestDeadLetterConsumer = ConsumerSpec{Durable: "ingest-deadletters", FilterSubject: DLQSubjects, Stream: DLQStreamName}
)

// IngestViewConsumers are ingest's read model's durable consumers.
var IngestViewConsumers = []ConsumerSpec{IngestStoredConsumer, IngestCompletedConsumer, IngestDeadLetterConsumer}
