package claimcheck

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// WithIdleCheck returns c with readers that look for their object every d
// while no chunk comes, instead of every 10s.
func WithIdleCheck(c ObjectClaims, d time.Duration) ObjectClaims {
	c.idleCheck = d
	return c
}

// MaxWindowChunks is the most chunks a reader asks for ahead of its reader.
const MaxWindowChunks = maxWindowChunks

// WindowChunks is how many chunks of the object info a reader asks for
// ahead of its reader.
var WindowChunks = windowChunks

// WithAPITimeout sets the deadline of each JetStream API exchange of c's reads.
func WithAPITimeout(c ObjectClaims, d time.Duration) ObjectClaims {
	c.apiTimeout = d
	return c
}

// LeaderInfo reads the info of object name from the leader of bucket's
// stream, as a reader does after a replica found nothing.
func LeaderInfo(ctx context.Context, c ObjectClaims, bucket, name string) (*jetstream.ObjectInfo, error) {
	return c.leaderInfo(ctx, bucket, name)
}
