// Package pglock holds Postgres session advisory locks on keys, exclusive
// across every process that shares the schema, on one pooled connection.
// The step runtime claims the uploads whose step it runs with them.
//
// Its SQL fragments let a caller take locks inside a larger statement (the
// marker store looks up markers and takes the claims of the missing ones in
// one round trip), and give them up in the round trip that commits what the
// locks protected.
package pglock

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// KeySQL is the SQL expression of the lock key of the key that SQL
// expression key gives, in the namespace that SQL expression ns gives.
// Advisory locks are database-wide, so the lock key includes the schema
// (current_schema()): users of other schemas of the same database, such as
// parallel tests, never block each other.
func KeySQL(ns, key string) string {
	return "hashtextextended(current_schema() || '/' || " + ns + " || '/' || " + key + ", 0)"
}

// TryLockSQL is the SQL expression that takes the lock KeySQL(ns, key)
// without waiting, and is true when it did.
func TryLockSQL(ns, key string) string { return "pg_try_advisory_lock(" + KeySQL(ns, key) + ")" }

// unlockSQL gives up the locks in namespace $1 on the keys $2.
var unlockSQL = `SELECT pg_advisory_unlock(` + KeySQL("$1", "id") + `) FROM unnest($2::text[]) AS t(id)`

// Set is the locks held in one namespace on one pooled connection.
type Set struct {
	conn *pgxpool.Conn
	ns   string
	held map[string]bool
}

// NewSet returns an empty set of the locks of namespace ns held on conn,
// which it owns from now on: Release or Discard hands it back.
func NewSet(conn *pgxpool.Conn, ns string, size int) *Set {
	return &Set{conn: conn, ns: ns, held: make(map[string]bool, size)}
}

// Add records that the connection holds the lock on key.
func (s *Set) Add(key string) { s.held[key] = true }

// Held reports whether the lock on key is held.
func (s *Set) Held(key string) bool { return s.held[key] }

// Len is how many locks are held.
func (s *Set) Len() int { return len(s.held) }

// Conn is the connection that holds the locks; nil once released.
func (s *Set) Conn() *pgxpool.Conn { return s.conn }

// HeldOf returns those of keys whose lock is held, without duplicates.
func (s *Set) HeldOf(keys []string) []string {
	var out []string
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if s.held[k] && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// QueueUnlock queues, in b, the statement that gives up the locks on keys;
// Forget them once it ran.
func (s *Set) QueueUnlock(b *pgx.Batch, keys []string) {
	if len(keys) > 0 {
		b.Queue(unlockSQL, s.ns, keys)
	}
}

// Forget records that the locks on keys were given up, and hands the
// connection back once none is held.
func (s *Set) Forget(keys []string) {
	for _, k := range keys {
		delete(s.held, k)
	}
	if len(s.held) == 0 && s.conn != nil {
		s.conn.Release()
		s.conn = nil
	}
}

// Release gives up the locks still held and hands the connection back. It
// is safe to call more than once; it costs a round trip only when locks are
// held.
func (s *Set) Release() {
	if s.conn == nil {
		return
	}
	keys := make([]string, 0, len(s.held))
	for k := range s.held {
		keys = append(keys, k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if len(keys) > 0 {
		if _, err := s.conn.Exec(ctx, unlockSQL, s.ns, keys); err != nil {
			s.Discard()
			return
		}
	}
	clear(s.held)
	s.conn.Release()
	s.conn = nil
}

// Discard closes the connection, so that the locks it may hold die with it.
func (s *Set) Discard() {
	if s.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.conn.Conn().Close(ctx)
	s.conn.Release()
	s.conn = nil
	clear(s.held)
}
