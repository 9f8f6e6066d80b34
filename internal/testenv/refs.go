package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// CountRefs counts the reference rows (upload_refs) of ids in the database
// at dbURL, such as a service's DATABASE_URL.
func CountRefs(t testing.TB, dbURL string, ids ...string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM upload_refs WHERE id = ANY($1)", ids).Scan(&n); err != nil {
		t.Fatalf("count upload_refs: %v", err)
	}
	return n
}
