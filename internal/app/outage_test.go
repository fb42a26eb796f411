package app

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// outageConfig is aupd on a private redis-server at port, counting only.
func outageConfig(t *testing.T, port int) *config.Config {
	cfg := testConfig(t, testutil.NATSServer(t, "").ClientURL(), "aupt"+testutil.RandomHex(4))
	cfg.Redis.Addrs = []string{fmt.Sprintf("127.0.0.1:%d", port)}
	cfg.Companies = nil
	cfg.AUP.Threshold = 1_000_000
	cfg.Policy.Postfix.Listen, cfg.Policy.Dovecot.Listen = "", ""
	return cfg
}

// outage kills the redis-server p and waits until it is gone.
func outage(t *testing.T, p *os.Process) {
	t.Helper()
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	_, _ = p.Wait()
}

// TestCountingResumesSoonAfterRedisOutage takes Redis away with events
// waiting, for at least 10 s: long enough for a backoff that doubles per
// failed delivery from retry_min 500ms to reach 8 s. It brings Redis back
// on the same port right after a retry (when a backoff carried over from
// the outage would be longest; a consumer that waits for Redis without
// retrying gets there 15 s later), and measures how long after Redis
// answers again the first of the events is counted.
func TestCountingResumesSoonAfterRedisOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("a Redis outage of 16 s")
	}
	port := testutil.FreePort(t)
	addr, proc := testutil.PrivateRedisProcess(t, port)
	cfg := outageConfig(t, port)
	cfg.NATS.Consumer.RetryMin = 500 * time.Millisecond
	cfg.NATS.Consumer.RetryMax = time.Minute
	h := start(t, cfg)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	count := func(account string) int64 {
		n, _ := store.WindowLen(context.Background(), rdb, cfg.Redis.Prefix, account)
		return n
	}
	now := time.Now()
	h.publish("aup.verdict.outbound", verdict("before", "outbound", "before@example.org", "spam", now), "before")
	testutil.Eventually(t, 20*time.Second, func() bool { return count("before@example.org") == 1 }, "not counted before the outage")

	outage(t, proc)
	for i := range 100 {
		id := fmt.Sprintf("during-%d", i)
		h.publish("aup.verdict.outbound", verdict(id, "outbound", "during@example.org", "spam", now), id)
	}
	began := time.Now()
	time.Sleep(10 * time.Second) // the outage itself, not a wait for something
	retries := func() string { return metricValue(h.metrics(), "aupd_event_retries_total") }
	before := retries()
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end) && retries() == before; {
		time.Sleep(20 * time.Millisecond)
	}
	down := time.Since(began)

	testutil.PrivateRedisProcess(t, port) // returns once it answers PING
	back := time.Now()
	testutil.Eventually(t, 60*time.Second, func() bool { return count("during@example.org") > 0 }, "nothing counted after Redis came back")
	took := time.Since(back)
	t.Logf("first event counted %s after Redis answered again (outage %s)", took.Round(time.Millisecond), down.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("counting resumed %s after Redis came back; want within a few seconds", took.Round(time.Millisecond))
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return count("during@example.org") == 100 }, "not every event counted after the outage")
}
