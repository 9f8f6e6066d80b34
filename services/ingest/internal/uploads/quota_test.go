package uploads

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

func TestStagedQuota(t *testing.T) {
	t.Parallel()
	q := &StagedQuota{Limit: 100, Hold: time.Hour}
	const inline = 10

	// Small or unknown sizes charge nothing up front.
	for _, size := range []int64{-1, 0, inline} {
		c, err := q.open("alice", size, inline)
		if err != nil || q.InFlight("alice") != 0 {
			t.Fatalf("open(%d): %v, in flight %d; want nothing charged", size, err, q.InFlight("alice"))
		}
		c.release()
	}
	// A known large size is charged whole, up to the limit.
	a, err := q.open("alice", 60, inline)
	if err != nil || q.InFlight("alice") != 60 {
		t.Fatalf("open(60): %v, in flight %d", err, q.InFlight("alice"))
	}
	var qe *QuotaError
	if _, err := q.open("alice", 41, inline); !errors.As(err, &qe) || qe.Limit != 100 {
		t.Fatalf("open(41) over the limit: got %v, want a *QuotaError", err)
	}
	if _, err := q.open("bob", 100, inline); err != nil {
		t.Fatalf("another caller: %v", err)
	}

	// Unknown size: charged from the first byte past the inline threshold,
	// refused once it goes over.
	b, _ := q.open("alice", -1, inline)
	n, err := io.Copy(io.Discard, b.reader(bytes.NewReader(make([]byte, 50)), -1, inline))
	if !errors.As(err, &qe) || q.InFlight("alice") > 100 {
		t.Fatalf("chunked body over the quota: read %d, %v, in flight %d; want a *QuotaError within the limit", n, err, q.InFlight("alice"))
	}
	b.release()
	if got := q.InFlight("alice"); got != 60 {
		t.Errorf("after the refused body's release: in flight %d, want 60", got)
	}

	// Held until stored; a completion of another id releases nothing.
	a.hold("id-a")
	q.stored("id-other")
	if got := q.InFlight("alice"); got != 60 {
		t.Errorf("held: in flight %d, want 60", got)
	}
	q.stored("id-a")
	if got := q.InFlight("alice"); got != 0 {
		t.Errorf("after stored: in flight %d, want 0", got)
	}
	q.stored("id-a") // twice: nothing more

	// A hold ends on its own after Hold.
	short := &StagedQuota{Limit: 100, Hold: 20 * time.Millisecond}
	c, _ := short.open("carol", 50, inline)
	c.hold("id-c")
	deadline := time.Now().Add(10 * time.Second)
	for short.InFlight("carol") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("hold did not expire: in flight %d", short.InFlight("carol"))
		}
		time.Sleep(5 * time.Millisecond)
	}

	// A nil quota charges nothing and refuses nothing.
	var none *StagedQuota
	c, err = none.open("x", 1<<40, inline)
	if err != nil || c != nil {
		t.Errorf("nil quota: got %v, %v", c, err)
	}
	c.hold("id")
	c.release()
	none.stored("id")
}
