package claimcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
)

// Delete removes the referenced object: it marks the object deleted (its
// info, rolled up), then rolls its chunks up into one empty message, which
// gives their space back. Both are publishes to the bucket's subjects, as
// ObjectStore.Delete's mark is; unlike it, no purge, which the services
// may not send. An object already gone is no error.
func (c ObjectClaims) Delete(ctx context.Context, dataref string) error {
	bucket, name, err := events.ParseObjectRef(dataref)
	if err != nil {
		return err
	}
	ctx, cancel := c.apiContext(ctx)
	defer cancel()
	store, err := c.JS.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete claim check %s: %w", dataref, err)
	}
	info, err := c.getInfo(ctx, store, bucket, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete claim check %s: %w", dataref, err)
	}
	gone := *info
	gone.Deleted, gone.Size, gone.Chunks, gone.Digest, gone.ModTime = true, 0, 0, "", time.Now().UTC()
	data, err := json.Marshal(gone)
	if err != nil {
		return fmt.Errorf("delete claim check %s: %w", dataref, err)
	}
	meta := nats.NewMsg(MetaSubject(bucket, name))
	meta.Data = data
	chunks := nats.NewMsg(chunkSubject(bucket, info.NUID))
	for _, m := range []*nats.Msg{meta, chunks} {
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		if _, err := c.JS.PublishMsg(ctx, m); err != nil {
			return fmt.Errorf("delete claim check %s: %w", dataref, err)
		}
	}
	return nil
}
