package uploads

import (
	"context"
	"errors"
	"io"

	"github.com/blobref/blobref/internal/claimcheck"
)

// stageBody streams body into the staging bucket as the object named id
// (see claimcheck.Staging.Stage), counting what it writes in m, and
// answers claimcheck's errors with ingest's: ErrStaleStaging, ErrBusy, *BodyError,
// *StoreFullError and *UnavailableError.
func stageBody(ctx context.Context, st *claimcheck.Staging, id string, body io.Reader, m *Metrics) (claimcheck.Staged, error) {
	staged, err := st.Stage(ctx, id, body, stageHooks{m})
	return staged, stagingError(err)
}

// stageHooks counts staging's writes and retries, and fires the
// ingest/mid-stage failpoint.
type stageHooks struct{ m *Metrics }

func (h stageHooks) Wrote(n int)                        { h.m.wroteStaged(n) }
func (h stageHooks) Retried()                           { h.m.retriedStaging() }
func (h stageHooks) MidStage(ctx context.Context) error { return inject(ctx, "mid-stage") }

// stagingError maps an error of claimcheck.Staging.Stage to ingest's.
func stagingError(err error) error {
	var (
		bodyErr    *claimcheck.BodyError
		fullErr    *claimcheck.StoreFullError
		unavailErr *claimcheck.UnavailableError
	)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, claimcheck.ErrStale):
		return ErrStaleStaging
	case errors.Is(err, claimcheck.ErrTakenOver):
		return ErrBusy // the request that took the key over is staging it
	case errors.As(err, &bodyErr):
		return &BodyError{Err: bodyErr.Err}
	case errors.As(err, &fullErr):
		return &StoreFullError{Err: fullErr.Err}
	case errors.As(err, &unavailErr):
		return unavailable("staging", unavailErr.Err)
	}
	return err
}
