package store

import (
	"context"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

type retentionPublisher struct{ events []events.AccountEvent }

func (p *retentionPublisher) PublishAccountEvent(_ context.Context, ev *events.AccountEvent, _ []byte) error {
	p.events = append(p.events, *ev)
	return nil
}

func TestTrimHistoryByAge(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	clock := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	s := New(rdb, prefix, WithClock(func() time.Time { return clock }))
	ctx := context.Background()
	by := Actor{Name: "t", Reason: rules.ReasonAdmin, Note: "test"}
	pub := &retentionPublisher{}
	// Three entries, 9, 5 and 1 days before "now"; the middle one in
	// another zone, to check the offset is honoured.
	for _, at := range []time.Time{clock.AddDate(0, 0, -9), clock.AddDate(0, 0, -5).In(time.FixedZone("x", 5*3600)), clock.AddDate(0, 0, -1)} {
		clock = at
		if _, err := s.SetStatus(ctx, "al@example.com", rules.StatusLocked, time.Time{}, by); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetStatus(ctx, "al@example.com", rules.StatusActive, time.Time{}, by); err != nil {
			t.Fatal(err)
		}
		if _, err := s.FlushOutbox(ctx, "al@example.com", pub); err != nil {
			t.Fatal(err)
		}
	}
	clock = time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	n, err := s.TrimHistory(ctx, clock.AddDate(0, 0, -7))
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx, "al@example.com", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || len(h) != 4 {
		t.Fatalf("removed %d, kept %d entries; want 2 removed, 4 kept", n, len(h))
	}
	for _, e := range h {
		if e.Time.Before(clock.AddDate(0, 0, -7)) {
			t.Errorf("kept an entry of %s", e.Time)
		}
	}
	if n, err := s.TrimHistory(ctx, clock.AddDate(0, 0, -3)); err != nil || n != 2 {
		t.Errorf("second trim removed %d (%v), want 2", n, err)
	}
}

func TestClearEndedLockouts(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	now := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	s := New(rdb, prefix, WithClock(func() time.Time { return now }))
	ctx := context.Background()
	by := Actor{Name: "aupd", Reason: rules.ReasonLockout, Note: "5 failed logins"}
	pub := &retentionPublisher{}
	for acct, until := range map[string]time.Time{"ended@example.com": now.Add(-time.Minute), "inforce@example.com": now.Add(time.Hour)} {
		if _, err := s.SetStatus(ctx, acct, rules.StatusLockout, until, by); err != nil {
			t.Fatal(err)
		}
		if _, err := s.FlushOutbox(ctx, acct, pub); err != nil {
			t.Fatal(err)
		}
	}
	pub.events = nil
	n, err := s.ClearEndedLockouts(ctx, pub)
	if err != nil || n != 1 {
		t.Fatalf("cleared %d (%v), want 1", n, err)
	}
	a, _ := s.Account(ctx, "ended@example.com")
	b, _ := s.Account(ctx, "inforce@example.com")
	if a.Status != rules.StatusActive || b.Status != rules.StatusLockout {
		t.Errorf("statuses %s and %s, want active and lockout", a.Status, b.Status)
	}
	if len(pub.events) != 1 || pub.events[0].Type != events.TypeStatusChanged || pub.events[0].Account != "ended@example.com" || pub.events[0].New.Status != "active" {
		t.Errorf("events %+v", pub.events)
	}
	members, _ := rdb.SMembers(ctx, prefix+":idx:status:lockout").Result()
	if len(members) != 1 || members[0] != "inforce@example.com" {
		t.Errorf("lockout index %v", members)
	}
	if n, err := s.ClearEndedLockouts(ctx, pub); err != nil || n != 0 {
		t.Errorf("second run cleared %d (%v)", n, err)
	}
}
