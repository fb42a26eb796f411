package replsync

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/testutil"
)

// clock is a clock the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// lockedBuffer is a log sink safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

const (
	startLine  = "redis master's writes are not on enough replicas"
	acceptLine = "acknowledging a redis master's writes without replicas"
	endLine    = "redis master's writes are on enough replicas again"
)

func newLossBarrier(t *testing.T, master *redis.Client, loss Loss) (*Barrier, *clock, *lockedBuffer, *Metrics) {
	t.Helper()
	clk := &clock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	logs := &lockedBuffer{}
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	b := New(master, "t", 1, 100*time.Millisecond, WithLoss(loss, 30*time.Second), WithClock(clk.Now),
		WithLogger(slog.New(slog.NewTextHandler(logs, nil))), WithMetrics(m))
	return b, clk, logs, m
}

// TestAcceptAfterTheBound: a master without a replica fails its waits
// (the first one after WAIT's timeout, the later ones at once, from
// ROLE) until replica_loss_after has passed; then they succeed, said once;
// once a replica holds the writes again the run ends, said once.
func TestAcceptAfterTheBound(t *testing.T) {
	ctx := context.Background()
	lone := testutil.PrivateRedis(t)
	addr := lone.Options().Addr
	b, clk, logs, m := newLossBarrier(t, lone, Accept)

	var short *ShortError
	if err := b.Wait(ctx, "acct"); !errors.As(err, &short) || short.Connected {
		t.Fatalf("first wait = %v, want a ShortError from WAIT", err)
	}
	clk.Add(10 * time.Second)
	if err := b.Wait(ctx, "acct"); !errors.As(err, &short) || !short.Connected || short.Got != 0 {
		t.Fatalf("second wait = %v, want a ShortError from ROLE (0 of 1 connected)", err)
	}
	if got := value(t, m.unreplicated.WithLabelValues(addr)); got != 1 {
		t.Fatalf("aupd_redis_unreplicated = %v during the run, want 1", got)
	}
	clk.Add(20 * time.Second) // 30s since the first short wait
	for i := range 3 {
		if err := b.Wait(ctx, "acct"); err != nil {
			t.Fatalf("wait %d past replica_loss_after under accept: %v", i, err)
		}
	}
	if got := value(t, m.accepted.WithLabelValues(addr)); got != 1 {
		t.Fatalf("aupd_redis_unreplicated_accepted = %v, want 1", got)
	}
	if got := value(t, m.failures.WithLabelValues(addr)); got != 5 {
		t.Fatalf("aupd_redis_wait_failures_total = %v, want 5 (accepted ones count)", got)
	}

	// A replica comes: the next waits find it online and end the run.
	host, port, _ := net.SplitHostPort(addr)
	testutil.PrivateRedisServer(t, "--replicaof", host, port)
	testutil.Eventually(t, 20*time.Second, func() bool {
		return b.Wait(ctx, "acct") == nil && value(t, m.unreplicated.WithLabelValues(addr)) == 0
	}, "the run did not end once a replica was back")
	if got := value(t, m.accepted.WithLabelValues(addr)); got != 0 {
		t.Fatalf("aupd_redis_unreplicated_accepted = %v after the run, want 0", got)
	}
	for line, want := range map[string]int{startLine: 1, acceptLine: 1, endLine: 1} {
		if n := logs.count(line); n != want {
			t.Errorf("%q logged %d times, want %d", line, n, want)
		}
	}
	if !strings.Contains(logs.b.String(), "acknowledged_without_replicas=true") {
		t.Errorf("the end line does not say writes were acknowledged without replicas:\n%s", logs.b.String())
	}
}

// TestHoldNeverAccepts: under hold the waits keep failing however long.
func TestHoldNeverAccepts(t *testing.T) {
	ctx := context.Background()
	lone := testutil.PrivateRedis(t)
	b, clk, logs, m := newLossBarrier(t, lone, Hold)
	var short *ShortError
	for range 4 {
		if err := b.Wait(ctx, "acct"); !errors.As(err, &short) {
			t.Fatalf("wait under hold = %v, want a ShortError", err)
		}
		clk.Add(time.Hour / 4)
	}
	if n := logs.count(startLine); n != 1 {
		t.Fatalf("start logged %d times, want once", n)
	}
	if n := logs.count(acceptLine); n != 0 {
		t.Fatal("hold accepted")
	}
	if got := value(t, m.accepted.WithLabelValues(lone.Options().Addr)); got != 0 {
		t.Fatalf("aupd_redis_unreplicated_accepted = %v under hold", got)
	}
}

// TestForgetStaleMaster: a master whose run has seen no wait for
// forgetAfter (its slots moved away) is forgotten, series and all, so that
// its alert does not fire for ever.
func TestForgetStaleMaster(t *testing.T) {
	clk := &clock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	l := newLosses(1)
	l.m, l.now = m, clk.Now
	short := &ShortError{Addr: "gone:6379", Replicas: 1}
	if err := l.record("gone:6379", short); err == nil {
		t.Fatal("a short wait under hold returned nil")
	}
	if n := series(m.unreplicated); n != 1 {
		t.Fatalf("%d unreplicated series, want 1", n)
	}
	clk.Add(forgetAfter - time.Second)
	l.forgetStale()
	if !l.short("gone:6379") {
		t.Fatal("forgotten before forgetAfter")
	}
	clk.Add(time.Second)
	l.forgetStale()
	if l.short("gone:6379") || series(m.unreplicated) != 0 {
		t.Fatal("a master not waited on for forgetAfter is still remembered")
	}
}

// value reads a gauge's or a counter's value.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

// series counts the series a collector has.
func series(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 16)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}
