package loadtest

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestEnforcement runs phase e at a tiny size on the local Redis (keys
// under a prefix of the run's own, deleted at the end) and an in-process
// NATS server: the policy server refused every account that crossed,
// and the figures are sound and printed.
func TestEnforcement(t *testing.T) {
	if testing.Short() {
		t.Skip("runs aupd in-process against the local Redis")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const probes = 12
	var out bytes.Buffer
	r, err := run(ctx, Config{Events: 3000, Accounts: 300, Batch: 100, Workers: 2, Phases: "e", Timeout: time.Minute,
		RedisAddr: "127.0.0.1:6379", EnforceAccounts: probes, EnforceEvery: 20 * time.Millisecond, Seed: 3, Out: &out})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	e := r.enforce
	if e == nil {
		t.Fatal("no figures from phase e")
	}
	if e.Probes != probes || len(e.Times) != probes || len(e.NotRefused) != 0 {
		t.Fatalf("%d accounts crossed, %d refused, not refused: %v; want all %d refused", e.Probes, len(e.Times), e.NotRefused, probes)
	}
	for _, d := range e.Times {
		if d <= 0 || d >= probeLimit {
			t.Errorf("time to enforcement %s", d)
		}
	}
	p50, p99, mx := e.quantiles()
	if p50 > p99 || p99 > mx || p50 <= 0 {
		t.Errorf("p50 %s, p99 %s, max %s", p50, p99, mx)
	}
	// The background load and the probes' verdicts were published while
	// the probes ran.
	if e.Drain <= 0 || e.Offered <= 0 {
		t.Errorf("drain %.0f events/s, offered %.0f events/s", e.Drain, e.Offered)
	}
	for _, want := range []string{"time to enforcement p50/p99/max", "the p99 target of 100.00 ms", "deleted "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output without %q", want)
		}
	}
}
