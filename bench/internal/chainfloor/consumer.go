package chainfloor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// consumer runs the store or ref role: its durable consumer's messages,
// one at a time.
type consumer struct {
	d    Deps
	role string
}

// retryDelay is how long a message that failed waits to be delivered
// again.
const retryDelay = 100 * time.Millisecond

// errBusy: another process holds the upload's claim.
var errBusy = errors.New("claimed by another process")

// run handles the consumer's messages until ctx ends.
func (c *consumer) run(ctx context.Context) error {
	cons, err := c.d.JS.Consumer(ctx, StreamName, consumerOf[c.role].Durable)
	if err != nil {
		return fmt.Errorf("chainfloor: %s: %w", c.role, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("chainfloor: %s: %w", c.role, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	handle := c.store
	if c.role == Ref {
		handle = c.ref
	}
	for {
		m, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("chainfloor: %s: %w", c.role, err)
		}
		if err := handle(context.WithoutCancel(ctx), m); err != nil {
			c.d.Log.Warn("message failed; it is delivered again", "role", c.role, "subject", m.Subject(), "err", err)
			_ = m.NakWithDelay(retryDelay)
			continue
		}
		_ = m.Ack()
	}
}

// store claims the upload and looks its marker up, writes the object
// unless the marker says it is done, records the marker and gives the
// claim up, and publishes the stored message.
func (c *consumer) store(ctx context.Context, m jetstream.Msg) error {
	id := strings.TrimPrefix(m.Subject(), RequestedPrefix)
	conn, err := c.d.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	var claimed, done bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0)),
		EXISTS (SELECT FROM `+Markers+` WHERE step = '`+Store+`' AND id = $1)`, id).Scan(&claimed, &done); err != nil {
		return err
	}
	if !claimed {
		return errBusy
	}
	if err := c.record(ctx, conn, id, m.Data(), done); err != nil {
		// The claim must not stay with the pooled connection.
		if _, uerr := conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`); uerr != nil {
			_ = conn.Conn().Close(ctx)
		}
		return err
	}
	return c.publish(ctx, StoredPrefix+id, []byte(KeyPrefix+id))
}

// record writes the object of upload id with data, unless done, then
// commits the marker and, after the commit, gives the claim up: one round
// trip.
func (c *consumer) record(ctx context.Context, conn *pgxpool.Conn, id string, data []byte, done bool) error {
	b := &pgx.Batch{}
	if !done {
		sum := sha256.Sum256(data)
		err := c.d.Bucket.WriteAll(ctx, KeyPrefix+id, data, &blob.WriterOptions{
			ContentType: "application/octet-stream", Metadata: map[string]string{"sha256": hex.EncodeToString(sum[:])}, IfNotExist: true,
		})
		if err != nil && gcerrors.Code(err) != gcerrors.FailedPrecondition {
			return err
		}
		b.Queue(`BEGIN`)
		b.Queue(`INSERT INTO `+Markers+` (step, id) VALUES ('`+Store+`', $1)`, id)
		b.Queue(`COMMIT`)
	}
	b.Queue(`SELECT pg_advisory_unlock(hashtextextended($1, 0))`, id)
	return conn.SendBatch(ctx, b).Close()
}

// ref checks the object, inserts the reference and its marker in one
// transaction, and publishes the completed message.
func (c *consumer) ref(ctx context.Context, m jetstream.Msg) error {
	id := strings.TrimPrefix(m.Subject(), StoredPrefix)
	key := string(m.Data())
	attrs, err := c.d.Bucket.Attributes(ctx, key)
	if err != nil {
		return err
	}
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO `+Markers+` (step, id) VALUES ('`+Ref+`', $1) ON CONFLICT DO NOTHING`, id)
	b.Queue(`INSERT INTO `+Refs+` (id, key, size) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, id, key, attrs.Size)
	if err := c.d.Pool.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	return c.publish(ctx, CompletedPrefix+id, nil)
}

// publish publishes the next message of the chain, de-duplicated by its
// subject, and waits for JetStream's ack.
func (c *consumer) publish(ctx context.Context, subject string, data []byte) error {
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, subject)
	_, err := c.d.JS.PublishMsg(ctx, msg)
	return err
}
