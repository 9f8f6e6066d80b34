package pipeline

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAdminURL(t *testing.T) {
	t.Parallel()
	got, err := adminURL("postgres://postgres@127.0.0.1:5432/test?sslmode=disable&pool_max_conns=32&pool_min_conns=2")
	if err != nil {
		t.Fatal(err)
	}
	if want := "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
