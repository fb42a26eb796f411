package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

type nopPublisher struct{}

func (nopPublisher) PublishAccountEvent(context.Context, *events.AccountEvent, []byte) error {
	return nil
}

func TestCounts(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	kind := func(d rules.Direction, v rules.Verdict) rules.Kind { return rules.KindOf(d, v) }
	b := Batch{Account: "alice@example.com", Company: "acme", Threshold: 100, Cap: 5, Action: rules.ActionSuspend, Items: []Item{
		spam("a", t0.Add(-time.Hour)),
		spam("b", t0.Add(-2*time.Hour)),
		{ID: "c", Time: t0.Add(-time.Hour), Kind: kind(rules.Complaint, rules.Phish), Counting: true},
		{ID: "d", Time: t0.Add(-time.Hour), Kind: kind(rules.Inbound, rules.Ham)},
		{ID: "e", Time: t0.Add(-time.Minute), Kind: kind(rules.Outbound, rules.Ham)},
	}}
	if _, err := s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, NewID: func() string { return NewID(t0) }}); err != nil {
		t.Fatal(err)
	}
	c, err := s.Counts(ctx, "alice@example.com", CountQuery{Window: day, Cap: 5, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if c.Counting.Total != 3 || c.Counting.ByDirection[rules.Outbound] != 2 || c.Counting.ByVerdict[rules.Complaint][rules.Phish] != 1 || c.Counting.AtLeast {
		t.Fatalf("counting %+v", c.Counting)
	}
	if c.Other.Total != 2 || c.Other.ByVerdict[rules.Inbound][rules.Ham] != 1 {
		t.Fatalf("other %+v", c.Other)
	}
	// 90 minutes later the event of two hours before t0 has left the window.
	c, _ = s.Counts(ctx, "alice@example.com", CountQuery{Window: day, Cap: 5, Now: t0.Add(day - 90*time.Minute)})
	if c.Counting.Total != 2 {
		t.Fatalf("later: %+v", c.Counting)
	}
	// A floor after an event stops it counting.
	c, _ = s.Counts(ctx, "alice@example.com", CountQuery{Window: day, Cap: 5, Now: t0, Floor: t0.Add(-90 * time.Minute)})
	if c.Counting.Total != 2 {
		t.Fatalf("floor: %+v", c.Counting)
	}
	// At the cap with everything inside the window: at least.
	b.Items = []Item{spam("f", t0), spam("g", t0), spam("h", t0)}
	if _, err := s.Ingest(ctx, []Batch{b}, IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, NewID: func() string { return NewID(t0) }}); err != nil {
		t.Fatal(err)
	}
	c, _ = s.Counts(ctx, "alice@example.com", CountQuery{Window: day, Cap: 5, Now: t0})
	if c.Counting.Total != 5 || !c.Counting.AtLeast {
		t.Fatalf("capped: %+v", c.Counting)
	}
}

func TestListAndLicences(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	by := Actor{Name: "test", Reason: "admin"}
	var all []string
	for i := range 25 {
		addr := fmt.Sprintf("u%02d@acme.example", i)
		all = append(all, addr)
		if _, _, err := s.Provision(ctx, addr, rules.TypeMailbox, "acme", by); err != nil {
			t.Fatal(err)
		}
		switch i % 5 {
		case 1:
			_, _ = s.Suspend(ctx, addr, []rules.Service{rules.ServiceSend}, by)
		case 2:
			_, _ = s.SetStatus(ctx, addr, rules.StatusLocked, time.Time{}, by)
		case 3:
			_, _ = s.SetStatus(ctx, addr, rules.StatusClosed, time.Time{}, by)
		}
		if _, err := s.FlushOutbox(ctx, addr, nopPublisher{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SetAccount(ctx, "bob@other.example", rules.TypeMailbox, "other", by); err != nil {
		t.Fatal(err)
	}
	_, _ = s.FlushOutbox(ctx, "bob@other.example", nopPublisher{})
	if _, err := s.Delete(ctx, all[0], by); err != nil {
		t.Fatal(err)
	}
	_, _ = s.FlushOutbox(ctx, all[0], nopPublisher{})

	collect := func(q ListQuery) []string {
		t.Helper()
		var got []string
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatal("too many pages")
			}
			p, err := s.List(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Accounts) > q.Limit {
				t.Fatalf("page of %d > limit %d", len(p.Accounts), q.Limit)
			}
			for _, a := range p.Accounts {
				got = append(got, a.Address)
			}
			if p.Next == "" {
				break
			}
			q.Cursor = p.Next
		}
		slices.Sort(got)
		return got
	}
	if got := collect(ListQuery{Company: "acme", Limit: 4, Now: t0}); !slices.Equal(got, all[1:]) {
		t.Fatalf("company acme: %v", got)
	}
	if got := collect(ListQuery{Suspended: true, Limit: 2, Now: t0}); len(got) != 5 {
		t.Fatalf("suspended: %v", got)
	}
	if got := collect(ListQuery{Status: rules.StatusClosed, Company: "acme", Limit: 3, Now: t0}); len(got) != 5 {
		t.Fatalf("closed: %v", got)
	}
	if got := collect(ListQuery{Status: rules.StatusActive, Company: "acme", Limit: 3, Now: t0}); len(got) != 14 {
		t.Fatalf("active: %d %v", len(got), got)
	}
	if got := collect(ListQuery{Limit: 1000, Now: t0}); len(got) != 25 {
		t.Fatalf("all: %d", len(got))
	}
	if _, err := s.List(ctx, ListQuery{Limit: 10, Cursor: "!!"}); err == nil {
		t.Fatal("bad cursor accepted")
	}
	l, err := s.CountLicences(ctx, "acme", t0)
	if err != nil {
		t.Fatal(err)
	}
	if l.Total != 24 || l.Provisioned != 24 || l.ByStatus[rules.StatusClosed] != 5 || l.Suspended != 5 || l.ByService[rules.ServiceSend] != 5 {
		t.Fatalf("licences %+v", l)
	}
}
