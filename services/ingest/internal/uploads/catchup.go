package uploads

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/ingest/internal/readmodel"
)

// uploadsStream returns UPLOADS, looked up once.
func (s *Service) uploadsStream(ctx context.Context) (jetstream.Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stream != nil {
		return s.stream, nil
	}
	st, err := s.JS.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, err
	}
	s.stream = st
	return st, nil
}

// catchUp returns st as the pipeline's events have it: when the read model
// has not recorded the completion of a pending or stored upload, because
// its consumer is behind (ingest just restarted, say), the upload's latest
// completed event in UPLOADS, if any, completes it, and is told to the read
// model. A retry then answers what a Prefer: wait would otherwise wait for
// in vain, the completion that came before it, and a GET right after a
// Prefer: wait answer says what the answer said. Should JetStream not
// answer, st stands as the read model has it.
func (s *Service) catchUp(ctx context.Context, st State) State {
	if st.State != StatePending && st.State != StateStored {
		return st
	}
	stream, err := s.uploadsStream(ctx)
	if err != nil {
		return st
	}
	raw, err := stream.GetLastMsgForSubject(ctx, events.CompletedSubject(st.ID))
	if err != nil {
		return st // none (ErrMsgNotFound), or JetStream did not answer
	}
	ev, err := events.Decode(raw.Subject, raw.Header, raw.Data)
	if err != nil || ev.Type != events.TypeCompleted || ev.ID != st.ID || ev.Ref == nil || ev.SHA256 != st.SHA256 {
		return st
	}
	_ = readmodel.Apply(context.WithoutCancel(ctx), s.Pool, readmodel.Completed(ev, raw.Time, raw.Sequence))
	return completedState(st, ev.Ref, raw.Time.UTC())
}
