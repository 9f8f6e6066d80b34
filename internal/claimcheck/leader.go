package claimcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// getInfo returns the info of the object named name in bucket, through
// store, as store.GetInfo does, except that a "not found" is confirmed by
// the bucket's leader before it counts.
//
// GetInfo reads the object's info with a direct get, which any replica of
// the bucket's stream may answer: on a cluster a follower answers direct
// gets once it is 90% caught up with its leader, and the one follower that
// a publish's ack did not wait for may not have applied the object's last
// writes yet. Such a replica answers "not found" for an object whose
// writer already published its claim check: after a node's restart it can
// lag for seconds. Taken at its word, blobwriter would dead-letter an
// accepted upload as claim_missing (a cluster torture run did). Asked
// again with a plain message get, the stream's leader answers with what it
// has committed: the info, or a "not found" that stands.
func (c ObjectClaims) getInfo(ctx context.Context, store objectInfoer, bucket, name string) (*jetstream.ObjectInfo, error) {
	info, err := store.GetInfo(ctx, name)
	if !errors.Is(err, jetstream.ErrObjectNotFound) {
		return info, err
	}
	return c.leaderInfo(ctx, bucket, name)
}

// leaderInfo reads the info of the object named name in bucket from the
// leader of the bucket's stream: a message get ($JS.API.STREAM.MSG.GET),
// which only the leader answers, of the last message on the object's meta
// subject. Errors are ObjectStore.GetInfo's: ErrObjectNotFound for no info
// or a deleted object, ErrBucketNotFound for no bucket. The request is made
// by hand: jetstream's Stream.GetLastMsgForSubject makes a direct get of
// it, as an object store's stream allows them, which a replica answers.
func (c ObjectClaims) leaderInfo(ctx context.Context, bucket, name string) (*jetstream.ObjectInfo, error) {
	req, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{MetaSubject(bucket, name)})
	if err != nil {
		return nil, err
	}
	subject := apiPrefix(c.JS) + "STREAM.MSG.GET." + streamName(bucket)
	msg, err := c.JS.Conn().RequestWithContext(ctx, subject, req)
	if err != nil {
		return nil, fmt.Errorf("object %s/%s: ask the bucket's leader (%s): %w", bucket, name, subject, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Data []byte    `json:"data"`
			Time time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("object %s/%s: the bucket's leader answered %q: %w", bucket, name, msg.Data, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, jetstream.ErrObjectNotFound
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeStreamNotFound:
		return nil, jetstream.ErrBucketNotFound
	case resp.Error != nil:
		return nil, fmt.Errorf("object %s/%s: the bucket's leader: %w", bucket, name, resp.Error)
	case resp.Message == nil:
		return nil, fmt.Errorf("object %s/%s: the bucket's leader answered no message", bucket, name)
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(resp.Message.Data, &info); err != nil {
		return nil, jetstream.ErrBadObjectMeta
	}
	if info.Deleted {
		return nil, jetstream.ErrObjectNotFound
	}
	info.ModTime = resp.Message.Time // as GetInfo sets it
	return &info, nil
}

// apiPrefix is the subject prefix of js's API requests, with its dot:
// "$JS.API." unless js was made with another prefix or a domain.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix == "":
		return jetstream.DefaultAPIPrefix
	case strings.HasSuffix(o.APIPrefix, "."):
		return o.APIPrefix
	}
	return o.APIPrefix + "."
}
