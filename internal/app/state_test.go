package app

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// nopPub accepts account events (the test reads the indexes only).
type nopPub struct{}

func (nopPub) PublishAccountEvent(context.Context, *events.AccountEvent, []byte) error { return nil }

func gatherValue(t *testing.T, reg *prometheus.Registry, name, label string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetValue() == label
			}
			if match {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func TestStateScrapeIsBoundedAndCached(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	ctx := context.Background()
	st := store.New(rdb, prefix)
	by := store.Actor{Name: "t", Reason: rules.ReasonAdmin, Note: "test"}
	pub := nopPub{}
	suspend := func(acct string) {
		if _, err := st.Suspend(ctx, acct, []rules.Service{rules.ServiceReceive}, by); err != nil {
			t.Fatal(err)
		}
		if _, err := st.FlushOutbox(ctx, acct, pub); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{"a@example.com", "b@example.com", "c@example.com"} {
		suspend(a)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var commands int
	counting := redis.NewClient(&redis.Options{Addr: testutil.RedisAddr()})
	defer counting.Close()
	counting.AddHook(countHook{n: &commands})
	c := newStateCollector(&stateCollector{
		rdb: counting, prefix: prefix, log: slog.New(slog.DiscardHandler), now: func() time.Time { return now },
		maxScan: 2, ttl: 5 * time.Second, outboxPending: st.OutboxPending,
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)

	v, _ := gatherValue(t, reg, "aupd_accounts_suspended", "admin")
	u, _ := gatherValue(t, reg, "aupd_accounts_suspended", "unscanned")
	if v != 2 || u != 1 {
		t.Fatalf("with a scan bound of 2: admin %v, unscanned %v; want 2 and 1", v, u)
	}
	first := commands
	if first == 0 || first > 20 {
		t.Fatalf("one scrape ran %d Redis commands", first)
	}
	// Within the cache time a scrape does no Redis work and shows the
	// cached state, even after a change.
	suspend("d@example.com")
	now = now.Add(4 * time.Second)
	u, _ = gatherValue(t, reg, "aupd_accounts_suspended", "unscanned")
	if commands != first || u != 1 {
		t.Errorf("a cached scrape ran %d more commands, unscanned %v", commands-first, u)
	}
	now = now.Add(2 * time.Second)
	if u, _ = gatherValue(t, reg, "aupd_accounts_suspended", "unscanned"); u != 2 || commands == first {
		t.Errorf("after the cache time: unscanned %v, commands %d", u, commands-first)
	}
}

// countHook counts the commands sent to Redis (a pipeline counts each).
type countHook struct{ n *int }

func (h countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !strings.EqualFold(cmd.Name(), "hello") {
			*h.n++
		}
		return next(ctx, cmd)
	}
}
func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		*h.n += len(cmds)
		return next(ctx, cmds)
	}
}
