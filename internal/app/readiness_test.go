package app

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/testutil"
)

// runChecked runs aupd with opts until the test ends and returns where
// it listens.
func runChecked(t *testing.T, opts Options) Info {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Info, 1)
	done := make(chan error, 1)
	opts.OnReady = func(i Info) { ready <- i }
	go func() { done <- Run(ctx, opts) }()
	var info Info
	select {
	case info = <-ready:
	case err := <-done:
		t.Fatalf("aupd exited: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("aupd did not start")
	}
	t.Cleanup(func() { cancel(); <-done })
	return info
}

// readyzAnswer is one answer of GET /readyz and how long it took.
type readyzAnswer struct {
	code   int
	checks map[string]string
	took   time.Duration
}

func askReadyz(t *testing.T, addr string) readyzAnswer {
	t.Helper()
	start := time.Now()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := readyzAnswer{code: resp.StatusCode, took: time.Since(start)}
	if err := json.Unmarshal(b, &a.checks); err != nil {
		t.Fatalf("readyz answered %d %q: %v", resp.StatusCode, b, err)
	}
	return a
}

// gaugeOf reads one sample of a gauge from reg (labels as name=value
// pairs), and whether it is there.
func gaugeOf(t *testing.T, reg *prometheus.Registry, name string, labels ...string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metrics
				}
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// logCount counts the JSON log lines with msg and every key=value given.
func logCount(logs string, msg string, attrs ...string) int {
	n := 0
	for line := range strings.SplitSeq(logs, "\n") {
		if !strings.Contains(line, `"msg":"`+msg+`"`) {
			continue
		}
		match := true
		for i := 0; i+1 < len(attrs); i += 2 {
			match = match && strings.Contains(line, `"`+attrs[i]+`":"`+attrs[i+1]+`"`)
		}
		if match {
			n++
		}
	}
	return n
}

// TestReadyzAnswersAtOnceWhileRedisHangs stops aupd's Redis (SIGSTOP: its
// connections stay open and nothing comes back). /readyz answers every
// request within 500 ms (it took over 2 s when it pinged Redis itself),
// says within a few seconds that Redis fails, and is ready again once
// Redis goes on; the loss is logged once when it starts and once when it
// ends.
func TestReadyzAnswersAtOnceWhileRedisHangs(t *testing.T) {
	const bound = 500 * time.Millisecond
	addr, proc := testutil.PrivateRedisProcess(t, testutil.FreePort(t))
	ns := testutil.NATSServer(t, "")
	cfg := testConfig(t, ns.ClientURL(), "aupt"+testutil.RandomHex(4))
	cfg.Redis.Addrs = []string{addr}
	cfg.Policy.Postfix.Listen, cfg.Policy.Dovecot.Listen = "", ""
	var logs logBuffer
	t.Cleanup(func() { dumpOnFailure(t, &logs) })
	reg := prometheus.NewRegistry()
	info := runChecked(t, Options{Config: cfg, Registry: reg, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	t.Cleanup(func() { _ = proc.Signal(syscall.SIGCONT) }) // before aupd stops

	a := askReadyz(t, info.HTTPAddr)
	if a.code != http.StatusOK || a.checks["status"] != "ok" || a.checks["redis"] != "ok" || a.checks["jetstream"] != "ok" || a.checks["nats"] != "ok" {
		t.Fatalf("readyz before the hang: %d %v", a.code, a.checks)
	}

	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	hung := time.Now()
	var slowest time.Duration
	for {
		a = askReadyz(t, info.HTTPAddr)
		slowest = max(slowest, a.took)
		if a.took > bound {
			t.Errorf("readyz took %s while Redis hangs; want under %s", a.took, bound)
		}
		if a.code == http.StatusServiceUnavailable {
			break
		}
		if time.Since(hung) > 10*time.Second {
			t.Fatalf("readyz still %d %v 10 s into the hang", a.code, a.checks)
		}
		time.Sleep(50 * time.Millisecond) // the pace of a prober, not a wait for something
	}
	t.Logf("503 after %s, slowest answer %s: %v", time.Since(hung).Round(time.Millisecond), slowest, a.checks)
	if a.checks["redis"] == "ok" || a.checks["nats"] != "ok" || a.checks["status"] != "not_ready" {
		t.Errorf("readyz while Redis hangs: %v; want redis failing, nats ok, status not_ready", a.checks)
	}
	if v, ok := gaugeOf(t, reg, "aupd_component_up", "component", "redis"); !ok || v != 0 {
		t.Errorf("aupd_component_up{component=redis} = %v (present %v), want 0", v, ok)
	}
	if v, ok := gaugeOf(t, reg, "aupd_ready"); !ok || v != 0 {
		t.Errorf("aupd_ready = %v (present %v), want 0", v, ok)
	}
	// Several rounds fail; the loss is logged once.
	time.Sleep(3 * readyInterval) // the hang itself, not a wait for something
	if n := logCount(logs.String(), "readiness check failing", "check", "redis"); n != 1 {
		t.Errorf("%d lines say the Redis check fails, want 1", n)
	}

	if err := proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return askReadyz(t, info.HTTPAddr).code == http.StatusOK }, "not ready after Redis went on")
	if n := logCount(logs.String(), "readiness check passes again", "check", "redis"); n != 1 {
		t.Errorf("%d lines say the Redis check passes again, want 1", n)
	}
	if !strings.Contains(logs.String(), `"failed_for":`) {
		t.Error("the recovery line does not say how long the check failed")
	}
}
