package uploadview_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/uploadview"
	"github.com/blobref/blobref/pkg/events"
)

// One upload of each stuck kind is listed with its kind and age, oldest
// first; uploads that completed, that are younger than the horizon, or
// whose dead letter was followed by a new request are not.
func TestStuck(t *testing.T) {
	t.Parallel()
	w := setup(t)
	ctx := context.Background()
	w.upload("unpublished", "users/1").record("alice", "k1", 40*time.Minute, false)
	w.upload("not-stored", "users/2").record("alice", "k2", 30*time.Minute, true).publish()
	w.upload("not-referenced", "users/3").record("alice", "k3", 25*time.Minute, true).publish().store(20 * time.Minute)
	w.upload("dead", "users/4").record("bob", "k4", 15*time.Minute, true).deadLetter(events.ReasonClaimMissing, time.Now().Add(-10*time.Minute))

	w.upload("completed", "users/5").record("alice", "k5", time.Hour, true).publish().store(time.Hour).complete()
	w.upload("completed-dead", "users/6").publish().store(0).complete().deadLetter(events.ReasonConflict, time.Now().Add(-time.Hour))
	w.upload("young", "users/7").record("alice", "k7", 0, false)
	redriven := w.upload("redriven", "users/8")
	redriven.deadLetter(events.ReasonClaimMissing, time.Now().Add(-time.Hour))
	redriven.publish() // published again after its dead letter: pending, as the consumer's lag shows

	list, more, err := w.view.Stuck(ctx, uploadview.StuckQuery{OlderThan: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range list {
		got = append(got, s.ID+":"+s.Kind)
	}
	want := []string{"unpublished:unpublished", "not-stored:not_stored", "not-referenced:not_referenced", "dead:dead_letter"}
	if !slices.Equal(got, want) || more {
		t.Fatalf("Stuck: got %v (more %v), want %v", got, more, want)
	}
	for i, minAge := range []time.Duration{40 * time.Minute, 30 * time.Minute, 20 * time.Minute, 10 * time.Minute} {
		if s := list[i]; s.Age < minAge || s.Age > minAge+time.Minute || s.AgeSeconds != s.Age.Seconds() || s.Why == "" {
			t.Errorf("%s: age %s (%gs), why %q; want about %s", s.ID, s.Age, s.AgeSeconds, s.Why, minAge)
		}
	}
	if d := list[3]; d.DeadLetter == nil || d.DeadLetter.Reason != events.ReasonClaimMissing || d.Subject != "users/4" || d.Owner != "bob" {
		t.Errorf("dead: got %+v, want its claim_missing letter and ingest's subject and caller", d)
	}

	list, more, err = w.view.Stuck(ctx, uploadview.StuckQuery{OlderThan: 0, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || !more || list[0].ID != "unpublished" || list[1].ID != "not-stored" {
		t.Errorf("Stuck with limit 2: got %+v, more %v; want the two oldest and more", list, more)
	}
	list, _, err = w.view.Stuck(ctx, uploadview.StuckQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 5 || list[4].ID != "young" {
		t.Errorf("Stuck of any age: got %d, want the four and the young one last", len(list))
	}
}
