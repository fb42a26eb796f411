package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/consumers"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// deadLetters returns the dead letters, by reason.
func (h *harness) deadLetters() map[string][]string {
	h.t.Helper()
	out := map[string][]string{}
	for _, m := range h.streamMsgs(h.cfg.NATS.Dead.Name) {
		out[m.Header.Get(consumers.HeaderReason)] = append(out[m.Header.Get(consumers.HeaderReason)], m.Header.Get(consumers.HeaderTruncated))
	}
	return out
}

// TestHugeInvalidEventIsDeadLettered: an invalid event near the 1 MiB
// limit still ends in a dead letter (cut to fit, saying so), so it never
// holds an ack-pending slot or stops the ack floor.
func TestHugeInvalidEventIsDeadLettered(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	h := start(t, testConfig(t, ns.ClientURL(), prefix))
	huge := `{"id":"big","time":"2026-11-21T10:00:00Z","direction":"outbound","account":"not an address","verdict":"spam","message":{"raw":"` +
		strings.Repeat("x", events.MaxPayload-200) + `"}}`
	if len(huge) > events.MaxPayload {
		t.Fatalf("test event is %d bytes", len(huge))
	}
	h.publish("aup.verdict.outbound", []byte(huge), "")
	h.publish("aup.verdict.outbound", verdict("after", "outbound", "dave@example.com", "spam", time.Now()), "")
	h.drained()
	dl := h.deadLetters()
	if len(dl[events.ReasonInvalidField]) != 1 {
		t.Fatalf("dead letters %v, want one invalid_field", dl)
	}
	if n, _ := strconv.Atoi(dl[events.ReasonInvalidField][0]); n != len(huge) {
		t.Fatalf("Aup-Truncated %q, want the original size %d", dl[events.ReasonInvalidField][0], len(huge))
	}
	if c := h.count("dave@example.com"); c != 1 {
		t.Fatalf("the event after the huge one: count %d", c)
	}
}

// TestPoisonAccountIsDeadLettered: an account whose Redis state is broken
// (a key of the wrong type) is a permanent failure: its events go to the
// dead letters as processing_failed at once, and every other account is
// counted.
func TestPoisonAccountIsDeadLettered(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	rdb, prefix := testutil.Redis(t)
	h := start(t, testConfig(t, ns.ClientURL(), prefix))
	// a known account (it has a record) whose window key holds a string
	if err := rdb.HSet(context.Background(), store.AccountKey(prefix, "poison@example.com", "s"), "created", 1).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(context.Background(), store.AccountKey(prefix, "poison@example.com", "w"), "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := range 3 {
		h.publish("aup.verdict.outbound", verdict(fmt.Sprint("p", i), "outbound", "poison@example.com", "spam", now), "")
		h.publish("aup.verdict.outbound", verdict(fmt.Sprint("f", i), "outbound", "fine@example.com", "spam", now), "")
	}
	h.drained()
	dl := h.deadLetters()
	if len(dl[consumers.ReasonProcessingFailed]) != 3 {
		t.Fatalf("dead letters %v, want 3 processing_failed", dl)
	}
	if c := h.count("fine@example.com"); c != 3 {
		t.Fatalf("fine account: count %d", c)
	}
	if m := h.metrics(); !strings.Contains(m, `aupd_dead_letters_total{reason="processing_failed"} 3`) {
		t.Fatalf("metric missing:\n%s", grep(m, "dead_letters"))
	}
}

// TestLastDeliveryIsDeadLettered: an event that keeps failing for a
// transient reason (here a read-only Redis replica) is retried up to
// max_deliver times, then dead-lettered as max_deliveries: never retried
// forever, never lost.
func TestLastDeliveryIsDeadLettered(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	addr := testutil.PrivateRedisServer(t, "--replicaof", "127.0.0.1", "1")
	cfg := testConfig(t, ns.ClientURL(), "aupt"+testutil.RandomHex(4))
	cfg.Redis.Addrs = []string{addr}
	cfg.NATS.Consumer.MaxDeliver = 3
	cfg.NATS.Consumer.RetryMin = 50 * time.Millisecond
	cfg.NATS.Consumer.RetryMax = 100 * time.Millisecond
	h := start(t, cfg)
	h.publish("aup.verdict.outbound", verdict("oom", "outbound", "erin@example.com", "spam", time.Now()), "")
	testutil.Eventually(t, 20*time.Second, func() bool { return len(h.deadLetters()[consumers.ReasonMaxDeliveries]) == 1 },
		"no max_deliveries dead letter")
	h.drained()
	if m := h.metrics(); !strings.Contains(m, "aupd_event_retries_total 2") {
		t.Fatalf("want 2 retries before the dead letter:\n%s", grep(m, "retries"))
	}
	// Writable again, a fresh event counts: the worker kept running.
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if err := rdb.ReplicaOf(context.Background(), "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	h.publish("aup.verdict.outbound", verdict("ok", "outbound", "erin@example.com", "spam", time.Now()), "")
	h.drained()
	if n, _ := store.WindowLen(context.Background(), rdb, cfg.Redis.Prefix, "erin@example.com"); n != 1 {
		t.Fatalf("count %d after Redis recovered", n)
	}
}

func grep(s, sub string) string {
	var out []string
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

// TestStartupWaitsForRedisAndNATS: aupd started before Redis and NATS
// answers /healthz, says on /readyz what it waits for, and starts once they
// come, instead of exiting.
func TestStartupWaitsForRedisAndNATS(t *testing.T) {
	redisPort := testutil.FreePort(t)
	natsDir := t.TempDir()
	cfg := testConfig(t, "", "aupt"+testutil.RandomHex(4))
	cfg.Redis.Addrs = []string{fmt.Sprintf("127.0.0.1:%d", redisPort)}
	httpPort := testutil.FreePort(t)
	cfg.HTTP.Listen = fmt.Sprintf("127.0.0.1:%d", httpPort)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan Info, 1)
	natsPort := testutil.FreePort(t)
	cfg.NATS.URL = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	go func() { done <- Run(ctx, Options{Config: cfg, OnReady: func(i Info) { ready <- i }}) }()
	defer func() { cancel(); <-done }()
	get := func(path string) (int, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", httpPort, path))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { c, _ := get("/healthz"); return c == 200 }, "no /healthz while waiting")
	if c, body := get("/readyz"); c != 503 || !strings.Contains(body, "redis") {
		t.Fatalf("readyz while Redis is down: %d %s", c, body)
	}
	// Redis comes; then NATS.
	testutil.PrivateRedisServerOn(t, redisPort)
	testutil.Eventually(t, 20*time.Second, func() bool { _, body := get("/readyz"); return strings.Contains(body, "nats") }, "did not move on to NATS")
	testutil.NATSServerOn(t, natsPort, natsDir)
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("aupd exited: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("aupd did not start once Redis and NATS came")
	}
	if c, body := get("/readyz"); c != 200 {
		t.Fatalf("readyz after start: %d %s", c, body)
	}
}

// TestDurabilityCheckSeesReplicas: the start-up check warns of a master
// with replicas but no replication wait, and of a wait for more replicas
// than a master has; a wait a master can meet is not warned of.
func TestDurabilityCheckSeesReplicas(t *testing.T) {
	ctx := context.Background()
	master, _ := testutil.RedisPair(t)
	has := func(ws []string, sub string) bool {
		for _, w := range ws {
			if strings.Contains(w, sub) {
				return true
			}
		}
		return false
	}
	log := slog.New(slog.DiscardHandler)
	if ws := checkDurability(ctx, master, 0, log); !has(ws, "wait_replicas is 0") || !has(ws, "appendonly is no") {
		t.Errorf("no wait on a master with a replica: %q", ws)
	}
	if ws := checkDurability(ctx, master, 1, log); has(ws, "wait_replicas") {
		t.Errorf("a wait the master meets was warned of: %q", ws)
	}
	if ws := checkDurability(ctx, master, 2, log); !has(ws, "wait_replicas is 2 but master") {
		t.Errorf("a wait for more replicas than there are: %q", ws)
	}
}
