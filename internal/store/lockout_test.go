package store

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// liveStore is a store on the real clock, for tests of key expiries
// (which Redis times by its own clock).
func liveStore(t *testing.T) (*Store, *redis.Client) {
	t.Helper()
	rdb, prefix := testutil.Redis(t)
	return New(rdb, prefix), rdb
}

var lockoutActor = Actor{Name: "aupd", Reason: rules.ReasonLockout, Note: "5 failed logins"}

func TestLockoutOfAnAddressWithoutRecordIsTransient(t *testing.T) {
	s, rdb := liveStore(t)
	ctx := context.Background()
	const addr = "made-up@example.test"
	until := time.Now().Add(30 * time.Minute)
	res, err := s.Lockout(ctx, addr, "acme", until, lockoutActor)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Transient || res.Op != nil {
		t.Fatalf("result %+v; want a transient lockout", res)
	}
	a, err := s.Account(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if a.Exists || a.Company != "" {
		t.Errorf("a lockout created an account: %+v", a)
	}
	if got := a.View().EffectiveStatus(time.Now()); got != rules.StatusLockout {
		t.Errorf("status %s; want lockout while it lasts", got)
	}
	ttl, err := rdb.PTTL(ctx, s.key(addr, sufState)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 29*time.Minute || ttl > 30*time.Minute {
		t.Errorf("state expires in %s; want with the lockout, in 30m", ttl)
	}
	for _, k := range []string{s.key(addr, sufHistory), s.key(addr, sufOutbox)} {
		if n, _ := rdb.Exists(ctx, k).Result(); n != 0 {
			t.Errorf("%s exists", k)
		}
	}
	if ok, _ := rdb.SIsMember(ctx, s.idxAll(), addr).Result(); ok {
		t.Error("indexed")
	}
	page, err := s.List(ctx, ListQuery{Company: "acme", Limit: 10, Now: time.Now()})
	if err != nil || len(page.Accounts) != 0 {
		t.Errorf("listed: %v %v", page, err)
	}

	// A later change (an admin suspends it, or provisioning) makes a
	// durable record: the expiry goes.
	if _, err := s.Suspend(ctx, addr, []rules.Service{rules.ServiceSend}, Actor{Name: "admin", Reason: rules.ReasonAdmin}); err != nil {
		t.Fatal(err)
	}
	if ttl, _ := rdb.PTTL(ctx, s.key(addr, sufState)).Result(); ttl != -1 {
		t.Errorf("record after a change expires in %s; want no expiry", ttl)
	}
}

func TestLockoutOfAKnownAccount(t *testing.T) {
	s, rdb := liveStore(t)
	ctx := context.Background()
	const addr = "known@example.test"
	admin := Actor{Name: "admin", Reason: rules.ReasonAdmin}
	// A record without a company (created before its domain was known).
	if _, err := s.SetAccount(ctx, addr, rules.TypeMailbox, "", admin); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(30 * time.Minute)
	res, err := s.Lockout(ctx, addr, "acme", until, lockoutActor)
	if err != nil {
		t.Fatal(err)
	}
	if res.Transient || res.Op == nil || !res.Op.Changed || len(res.Op.Events) != 1 {
		t.Fatalf("result %+v", res)
	}
	if ev := res.Op.Events[0]; ev.Company != "acme" || ev.New.Status != "lockout" {
		t.Errorf("event %+v", ev)
	}
	a, _ := s.Account(ctx, addr)
	if !a.Exists || a.Company != "acme" || a.Status != rules.StatusLockout || a.LockoutUntil.UnixMilli() != until.UnixMilli() {
		t.Errorf("account %+v", a)
	}
	if ttl, _ := rdb.PTTL(ctx, s.key(addr, sufState)).Result(); ttl != -1 {
		t.Errorf("record expires in %s", ttl)
	}
	// The same lockout again changes nothing.
	if res, err := s.Lockout(ctx, addr, "acme", until, lockoutActor); err != nil || res.Op.Changed {
		t.Errorf("repeat: %+v %v", res, err)
	}

	// A lockout never replaces an admin's lock (which it would end).
	const lockedAddr = "locked@example.test"
	if _, err := s.SetStatus(ctx, lockedAddr, rules.StatusLocked, time.Time{}, admin); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Lockout(ctx, lockedAddr, "acme", until, lockoutActor); err != nil || res.Op.Changed {
		t.Errorf("lockout of a locked account: %+v %v", res, err)
	}
	if a, _ := s.Account(ctx, lockedAddr); a.Status != rules.StatusLocked {
		t.Errorf("status %s; want locked", a.Status)
	}
}
