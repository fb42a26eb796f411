package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// logBuffer is a log destination for concurrent writers.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// captureStderr sends what the process writes to file descriptor 2 (where
// go-redis's default logger writes) to a buffer, until the returned
// function is called; it returns the capture.
func captureStderr(t *testing.T) func() string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved, err := syscall.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup3(int(w.Fd()), 2, 0); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(&out, r); close(copied) }()
	restored := false
	restore := func() string {
		if !restored {
			restored = true
			_ = syscall.Dup3(saved, 2, 0)
			_ = syscall.Close(saved)
			_ = w.Close()
			<-copied
			_ = r.Close()
		}
		return out.String()
	}
	t.Cleanup(func() { restore() })
	return restore
}

// dumpOnFailure shows aupd's warnings and errors when the test failed.
func dumpOnFailure(t *testing.T, logs *logBuffer) {
	if !t.Failed() {
		return
	}
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			t.Log(line)
		}
	}
}

// runLogged runs aupd with cfg, logging JSON at level info into logs,
// until the test ends.
func runLogged(t *testing.T, cfg *Options) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Info, 1)
	done := make(chan error, 1)
	cfg.OnReady = func(i Info) { ready <- i }
	go func() { done <- Run(ctx, *cfg) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("aupd exited: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("aupd did not start")
	}
	t.Cleanup(func() { cancel(); <-done })
}

// TestRedisOutageLogsJSON takes aupd's Redis away for a while with events
// waiting, and checks that every line aupd and its libraries write, to
// its log and to the process's stderr, is JSON, and that go-redis's own
// complaints come through aupd's logger, rate-limited.
func TestRedisOutageLogsJSON(t *testing.T) {
	port := testutil.FreePort(t)
	addr, proc := testutil.PrivateRedisProcess(t, port)
	cfg := outageConfig(t, port)
	var logs logBuffer
	t.Cleanup(func() { dumpOnFailure(t, &logs) })
	stderr := captureStderr(t)
	runLogged(t, &Options{Config: cfg, Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	js := testutil.JetStream(t, cfg.NATS.URL)

	outage(t, proc)
	began := time.Now()
	now := time.Now()
	for i := range 50 {
		if _, err := js.Publish(context.Background(), "aup.verdict.outbound", verdict(fmt.Sprint("o-", i), "outbound", "o@example.org", "spam", now)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(8 * time.Second) // the outage itself, not a wait for something
	testutil.PrivateRedisProcess(t, port)
	down := time.Since(began)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	testutil.Eventually(t, 30*time.Second, func() bool {
		n, _ := store.WindowLen(context.Background(), rdb, cfg.Redis.Prefix, "o@example.org")
		return n == 50
	}, "events not counted after the outage")

	captured := stderr()
	redisLines := 0
	for name, text := range map[string]string{"log": logs.String(), "stderr": captured} {
		for line := range strings.SplitSeq(text, "\n") {
			if line == "" {
				continue
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("%s: a line that is not JSON: %q", name, line)
				continue
			}
			if rec["component"] == "redis" {
				redisLines++
			}
		}
	}
	limit := int(down/redisLogEvery) + 1
	t.Logf("outage %s: %d lines from go-redis (at most %d); %d bytes on stderr", down.Round(time.Millisecond), redisLines, limit, len(captured))
	if redisLines == 0 || redisLines > limit {
		t.Errorf("%d lines from go-redis in an outage of %s; want 1..%d", redisLines, down, limit)
	}
}

// TestNATSDisconnectAndReconnectLogged stops aupd's NATS server and starts
// it again on the same port and store: one line says the connection was
// lost, one that it is back.
func TestNATSDisconnectAndReconnectLogged(t *testing.T) {
	natsPort, natsDir := testutil.FreePort(t), t.TempDir()
	ns := testutil.NATSServerOn(t, natsPort, natsDir)
	_, prefix := testutil.Redis(t)
	cfg := testConfig(t, ns.ClientURL(), prefix)
	cfg.Policy.Postfix.Listen, cfg.Policy.Dovecot.Listen = "", ""
	var logs logBuffer
	runLogged(t, &Options{Config: cfg, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	lines := func(msg string) int { return strings.Count(logs.String(), `"msg":"`+msg+`"`) }

	ns.Shutdown()
	ns.WaitForShutdown()
	testutil.Eventually(t, 10*time.Second, func() bool { return lines("nats disconnected; reconnecting") > 0 }, "no line for the disconnect")
	testutil.NATSServerOn(t, natsPort, natsDir)
	testutil.Eventually(t, 20*time.Second, func() bool { return lines("nats reconnected") > 0 }, "no line for the reconnect")
	if d, r := lines("nats disconnected; reconnecting"), lines("nats reconnected"); d != 1 || r != 1 {
		t.Errorf("%d disconnect and %d reconnect lines, want 1 each:\n%s", d, r, logs.String())
	}

	// Counting goes on at once: an event published now is counted within
	// a few seconds.
	back := time.Now()
	js := testutil.JetStream(t, ns.ClientURL())
	if _, err := js.Publish(context.Background(), "aup.verdict.outbound", verdict("after-nats", "outbound", "n@example.org", "spam", back)); err != nil {
		t.Fatal(err)
	}
	rdb, _ := testutil.Redis(t)
	testutil.Eventually(t, 30*time.Second, func() bool {
		n, _ := store.WindowLen(context.Background(), rdb, prefix, "n@example.org")
		return n == 1
	}, "not counted after NATS came back")
	took := time.Since(back)
	t.Logf("counted %s after NATS was back and the event published", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("counted %s after NATS came back; want within a few seconds", took.Round(time.Millisecond))
	}
}
