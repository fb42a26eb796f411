package jobs

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/testutil"
)

func TestParseAndTick(t *testing.T) {
	at := time.Date(2026, 3, 4, 10, 7, 31, 500, time.UTC)
	for _, c := range []struct {
		spec string
		want time.Time
	}{
		{"@every 1m", time.Date(2026, 3, 4, 10, 7, 0, 0, time.UTC)},
		{"@every 10s", time.Date(2026, 3, 4, 10, 7, 30, 0, time.UTC)},
		{"CRON_TZ=UTC 17 3 * * *", time.Date(2026, 3, 4, 3, 17, 0, 0, time.UTC)},
		{"CRON_TZ=UTC 0 12 * * *", time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC)},
		{"CRON_TZ=UTC @hourly", time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)},
		{"CRON_TZ=UTC 0 0 1 1 *", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		s, err := Parse(c.spec)
		if err != nil {
			t.Fatalf("%s: %v", c.spec, err)
		}
		if got := Tick(s, at); !got.Equal(c.want) {
			t.Errorf("Tick(%s, %s) = %s, want %s", c.spec, at, got, c.want)
		}
		if got := Tick(s, c.want); !got.Equal(c.want) {
			t.Errorf("Tick(%s) at the activation itself = %s", c.spec, got)
		}
	}
	for _, bad := range []string{"", "* * *", "61 * * * *", "@sometimes"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if err := Defaults().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	c := Defaults()
	c.Retention = "every night"
	if err := c.Validate(); err == nil {
		t.Error("a bad schedule validated")
	}
}

func TestEachTickRunsOnceAcrossProcesses(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	now := time.Date(2026, 3, 4, 10, 7, 31, 0, time.UTC)
	var runs atomic.Int32
	job := Job{Name: "sweep", Schedule: "@every 1m", Run: func(context.Context, time.Time) error { runs.Add(1); return nil }}
	var runners []*Runner
	for range 3 {
		r, err := New(Options{Redis: rdb, Prefix: prefix, Now: func() time.Time { return now }, Registerer: prometheus.NewRegistry()}, []Job{job})
		if err != nil {
			t.Fatal(err)
		}
		runners = append(runners, r)
	}
	ran := 0
	for _, r := range runners {
		ok, err := r.RunNow(context.Background(), job)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			ran++
		}
	}
	if ran != 1 || runs.Load() != 1 {
		t.Fatalf("one tick ran %d times (%d)", ran, runs.Load())
	}
	// The next tick runs again.
	now = now.Add(time.Minute)
	if ok, err := runners[1].RunNow(context.Background(), job); !ok || err != nil || runs.Load() != 2 {
		t.Errorf("next tick: ran %v, err %v, runs %d", ok, err, runs.Load())
	}
	// An error is returned and counted; the tick stays taken.
	failing := Job{Name: "fail", Schedule: "@every 1m", Run: func(context.Context, time.Time) error { return errors.New("boom") }}
	if _, err := runners[0].RunNow(context.Background(), failing); err == nil {
		t.Error("job error lost")
	}
}

func TestPanicIsRecoveredAndTheScheduleGoesOn(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	var runs atomic.Int32
	job := Job{Name: "flaky", Schedule: "@every 1s", Run: func(context.Context, time.Time) error {
		if runs.Add(1) == 1 {
			panic("first run panics")
		}
		return nil
	}}
	r, err := New(Options{Redis: rdb, Prefix: prefix}, []Job{job})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, func() bool { return runs.Load() >= 2 }, "the job did not run again after a panic")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
