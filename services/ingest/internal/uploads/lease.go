package uploads

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// A large upload cannot be recorded before its body has streamed into the
// staging bucket: its sha256 is not known until then. Meanwhile a lease
// row in ingest_leases holds its key, without holding a Postgres
// connection: the holder renews it every third of leaseTTL while the body
// streams, the record replaces it, and a lease whose ingest died expires,
// so that the next request with the key takes over.
const (
	leaseTTL = 15 * time.Second
	// leaseSweep is how often expired leases are deleted, long after they
	// expired.
	leaseSweep = 5 * time.Minute
)

// takeLease takes the staging lease of upload id for holder, unless the
// upload is recorded or another request holds a live lease; in one round
// trip it also reads the upload as it stands. leased is false when the
// upload is recorded (ok) or leased by another request.
const takeLease = `
WITH taken AS (
	INSERT INTO ingest_leases (id, holder, expires_at)
	SELECT $1::text, $2::text, now() + $3::bigint * interval '1 microsecond'
	WHERE NOT EXISTS (SELECT FROM ingest_uploads WHERE id = $1::text)
	ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
	WHERE ingest_leases.expires_at <= now()
	RETURNING id
)
SELECT EXISTS (SELECT FROM taken), ` + snapshotColumns + `
FROM (SELECT $1::text AS id) k
LEFT JOIN ingest_uploads u ON u.id = k.id` + snapshotJoins

func (s *Service) takeLease(ctx context.Context, id, holder string) (snap snapshot, ok, leased bool, err error) {
	var c snapshotScan
	err = s.Pool.QueryRow(ctx, takeLease, id, holder, leaseTTL.Microseconds()).Scan(append([]any{&leased}, c.targets()...)...)
	if err != nil {
		return snapshot{}, false, false, unavailable("lease upload", err)
	}
	snap, ok = c.snapshot()
	return snap, ok, leased, nil
}

// holdLease renews the lease every third of leaseTTL until stop is called.
// The context it returns is cancelled when the lease is lost (another
// request took it over after it expired) or could not be renewed in time;
// lost then says why: ErrBusy or an *UnavailableError.
func (s *Service) holdLease(ctx context.Context, id, holder string) (lctx context.Context, stop func(), lost func() error) {
	lctx, cancel := context.WithCancel(ctx)
	var (
		mu     sync.Mutex
		reason error
	)
	fail := func(err error) {
		mu.Lock()
		reason = err
		mu.Unlock()
		cancel()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(leaseTTL / 3)
		defer tick.Stop()
		expires := time.Now().Add(leaseTTL)
		for {
			select {
			case <-lctx.Done():
				return
			case <-tick.C:
			}
			at := time.Now()
			tag, err := s.Pool.Exec(lctx, `UPDATE ingest_leases SET expires_at = now() + $3::bigint * interval '1 microsecond' WHERE id = $1 AND holder = $2`,
				id, holder, leaseTTL.Microseconds())
			switch {
			case err == nil && tag.RowsAffected() == 1:
				expires = at.Add(leaseTTL)
			case err == nil:
				fail(ErrBusy)
				return
			case lctx.Err() != nil:
				return
			case time.Now().After(expires):
				fail(unavailable("renew staging lease", err))
				return
			}
		}
	}()
	stop = func() { cancel(); <-done }
	lost = func() error {
		mu.Lock()
		defer mu.Unlock()
		return reason
	}
	return lctx, stop, lost
}

// releaseLease gives up a lease whose upload was not recorded, so that the
// client's retry need not wait for it to expire.
func (s *Service) releaseLease(ctx context.Context, id, holder string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _ = s.Pool.Exec(ctx, `DELETE FROM ingest_leases WHERE id = $1 AND holder = $2`, id, holder)
}

// sweepLeases deletes leases that expired long ago: those of requests whose
// ingest died and whose key nobody used again. A failure is left to the
// next sweep: an expired lease blocks nothing.
func (s *Service) sweepLeases(ctx context.Context) {
	_, _ = s.Pool.Exec(ctx, `DELETE FROM ingest_leases WHERE expires_at < now() - $1::bigint * interval '1 microsecond'`,
		leaseSweep.Microseconds())
}

// newHolder returns a lease holder name of one request.
func newHolder() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
