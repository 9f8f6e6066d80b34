package webhook

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/blobref/blobref/pkg/events"
)

// EventType is the type of the payload the notifier sends (the Standard
// Webhooks payload's "type").
const EventType = "upload.completed"

// Payload is the body of a delivery: the Standard Webhooks payload shape,
// with the completed upload's reference as its data.
type Payload struct {
	Type string `json:"type"`
	// Timestamp is when the upload happened (its event time), the same at
	// every attempt; webhook-timestamp is the attempt's.
	Timestamp time.Time        `json:"timestamp"`
	Data      events.Reference `json:"data"`
}

// Body returns the body of the delivery of completed event ev: the same
// bytes at every attempt.
func Body(ev *events.Event) ([]byte, error) {
	if ev.Ref == nil {
		return nil, errors.New("a completed event without its reference")
	}
	ref := *ev.Ref
	if ref.Owner == "" {
		ref.Owner = ev.Owner
	}
	return json.Marshal(Payload{Type: EventType, Timestamp: ev.Time, Data: ref})
}
