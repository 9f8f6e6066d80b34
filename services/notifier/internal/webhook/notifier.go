// Package webhook is notifier's side effect: it delivers each completed
// upload to its owner's webhook endpoints, signed as Standard Webhooks
// specifies, once per (upload, endpoint) as the receiver sees it.
//
// The step ("notify") ends the chain: it emits nothing. Its marker says an
// upload is done with every endpoint; under it, webhook_deliveries holds a
// marker per (upload, endpoint), recorded right after that endpoint's 2xx,
// so a retry after a partial failure sends only to the endpoints still
// waiting, and a republished completion sends nothing. The webhook-id is
// the same for every attempt at one (upload, endpoint), so a receiver can
// drop the one resend a crash between its 2xx and the record causes.
//
// A failed delivery (no connection, a timeout, a 3xx, 4xx other than 410,
// or 5xx) fails the message, which the runner retries with its back-off and
// dead-letters (retries_exhausted) after its last delivery. An endpoint
// that answers 410 Gone is done with for the upload. A connection the
// client refuses (an internal address) dead-letters at once
// (delivery_failed): no retry reaches another address.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// ReasonDeliveryFailed is the dead-letter reason of an upload that no retry
// can deliver: an endpoint refused by the address check.
const ReasonDeliveryFailed = "delivery_failed"

// Result is what the step's marker records: each endpoint's delivery.
type Result struct {
	Deliveries []Delivery `json:"deliveries"`
}

// Delivery is the delivery of an upload to one endpoint.
type Delivery struct {
	Endpoint  string `json:"endpoint"`
	WebhookID string `json:"webhookId"`
	Outcome   string `json:"outcome"`          // OutcomeDelivered or OutcomeGone
	Status    int    `json:"status,omitempty"` // the HTTP status of this attempt; 0 when an earlier one recorded it
}

// Notifier delivers completed uploads.
type Notifier struct {
	Endpoints *Endpoints
	Client    *http.Client
	Pool      *pgxpool.Pool
	Log       *slog.Logger // [slog.Default()]
	// Now is the clock of webhook-timestamp [time.Now].
	Now func() time.Time
}

// Step is the notifier's step: completed → the owner's endpoints; it
// emits nothing.
func (n *Notifier) Step() step.Step[Result] {
	return step.Step[Result]{
		Name:     events.NotifierConsumer.Step,
		Consumes: events.NotifierConsumer.Consumes,
		Durable:  events.NotifierConsumer.Durable,
		Effect:   n.notify,
	}
}

// notify delivers ev to each endpoint of its owner that has no marker yet.
func (n *Notifier) notify(ctx context.Context, ev *events.Event) (Result, error) {
	eps := n.Endpoints.For(ev.Owner)
	if len(eps) == 0 {
		return Result{}, nil
	}
	body, err := Body(ev)
	if err != nil {
		return Result{}, step.Permanent(events.ReasonInvalid, err)
	}
	st := store{n.Pool}
	done, err := st.done(ctx, ev.ID)
	if err != nil {
		return Result{}, err
	}
	var res Result
	var failed []error
	permanent := true
	for _, ep := range eps {
		id := MessageID(ev.ID, ep.ID)
		if outcome, ok := done[ep.ID]; ok {
			res.Deliveries = append(res.Deliveries, Delivery{Endpoint: ep.ID, WebhookID: id, Outcome: outcome})
			continue
		}
		status, err := n.send(ctx, ep, id, body)
		if err != nil {
			if ctx.Err() != nil {
				return Result{}, fmt.Errorf("deliver %s to %s: %w", ev.ID, ep.ID, ctx.Err())
			}
			var refused *RefusedError
			permanent = permanent && errors.As(err, &refused)
			failed = append(failed, err)
			continue
		}
		outcome := OutcomeDelivered
		switch {
		case status == http.StatusGone:
			outcome = OutcomeGone
			log := n.Log
			if log == nil {
				log = slog.Default()
			}
			log.Warn("webhook endpoint answered 410 Gone: remove it from the endpoints file", "endpoint", ep.ID,
				"owner", ep.Owner, "upload_id", ev.ID)
		case status < 200 || status > 299:
			permanent = false
			failed = append(failed, fmt.Errorf("endpoint %s: answered %d", ep.ID, status))
			continue
		}
		// The receiver has it: nothing may now cancel the record.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = st.record(rctx, ev.ID, ep.ID, id, outcome, status)
		cancel()
		if err != nil {
			return Result{}, err
		}
		res.Deliveries = append(res.Deliveries, Delivery{Endpoint: ep.ID, WebhookID: id, Outcome: outcome, Status: status})
	}
	if len(failed) > 0 {
		err := fmt.Errorf("deliver %s: %w", ev.ID, errors.Join(failed...))
		if permanent {
			return Result{}, step.Permanent(ReasonDeliveryFailed, err)
		}
		return Result{}, err
	}
	return res, nil
}

// send makes one signed attempt at delivering body to ep and returns the
// status it answered. Its error names the endpoint by id, never by URL
// (which may hold a token), and carries no network error a classifier could
// take for an outage of the notifier's own: one receiver down is that
// upload's failure, not a reason to stop delivering the others.
func (n *Notifier) send(ctx context.Context, ep Endpoint, id string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("endpoint %s: %v", ep.ID, err)
	}
	now := time.Now
	if n.Now != nil {
		now = n.Now
	}
	ts := now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "blobref-notifier")
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderTimestamp, fmt.Sprint(ts.Unix()))
	req.Header.Set(HeaderSignature, Signature(ep.Secrets, id, ts, body))
	resp, err := n.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		var refused *RefusedError
		if errors.As(err, &refused) {
			return 0, fmt.Errorf("endpoint %s: %w", ep.ID, refused)
		}
		return 0, fmt.Errorf("endpoint %s: %s", ep.ID, strings.ReplaceAll(err.Error(), ep.URL, "<url>"))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}
