package scale

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/rules"
	"github.com/aupd/aupd/tools/loadtest"
)

// TestMeasureOneProcess runs a tiny measurement on the real cluster (one
// aupd process, a few thousand events) and checks that its figures are
// sound and agree with one another.
func TestMeasureOneProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("brings up 3 NATS nodes, 6 Redis nodes and an aupd process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // it may wait its turn on the cluster lock
	defer cancel()
	// enough events that the window outlasts the 10 ms resolution of
	// /proc CPU figures many times over
	const events, accounts = 12000, 600
	res, err := Run(ctx, Config{Dir: t.TempDir(), Events: events, Accounts: accounts, Procs: []int{1}, Seed: 7, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res.Print(&out)
	t.Log("\n" + out.String())
	if len(res.Runs) != 1 {
		t.Fatalf("%d runs, want 1", len(res.Runs))
	}
	r := res.Runs[0]
	for _, p := range r.Problems {
		t.Error(p) // the run's own checks: every event applied once, exact windows, a notice per suspension, CPU positive
	}
	if !res.OK() {
		t.Error("result not OK")
	}
	if r.Procs != 1 || r.WindowEvents < 1 || r.WindowEvents > events {
		t.Errorf("procs %d, %d events in the window; want 1, 1 to %d", r.Procs, r.WindowEvents, events)
	}
	if per := float64(r.StoredBytes) / events; per < float64(res.MeanPayload) || per > float64(res.MeanPayload)+200 {
		t.Errorf("%.0f bytes stored per event of %d bytes", per, res.MeanPayload)
	}
	if r.BatchTime <= 0 {
		t.Errorf("batch time %s", r.BatchTime)
	}
	if r.EventsPerSec() <= 0 || r.Window <= 0 || r.Published <= 0 {
		t.Errorf("rate %.0f, window %s, publish %s", r.EventsPerSec(), r.Window, r.Published)
	}
	for name, d := range map[string]time.Duration{"aupd": r.Aupd, "nats": r.NATS, "redis masters": r.RedisMasters, "redis replicas": r.RedisRepls, "nats publish": r.PublishNATS} {
		if d <= 0 {
			t.Errorf("%s CPU %s in the window, want > 0", name, d)
		}
		// Nothing can use more than every core for the whole window.
		if limit := time.Duration(float64(res.Machine.Cores) * float64(max(r.Window, r.Published)) * 1.1); d > limit {
			t.Errorf("%s CPU %s exceeds %d cores over the window (%s)", name, d, res.Machine.Cores, r.Window)
		}
	}
	if got, want := r.PerEvent(r.Aupd+r.NATS+r.Redis()), r.PerEvent(r.Aupd)+r.PerEvent(r.NATS)+r.PerEvent(r.Redis()); got < want*0.99 || got > want*1.01 {
		t.Errorf("sum per event %.2f, parts %.2f", got, want)
	}
	if len(r.Shards) != 3 {
		t.Fatalf("%d shards, want 3", len(r.Shards))
	}
	var share float64
	var masters time.Duration
	for _, s := range r.Shards {
		share += s.Share
		masters += s.CPU
		// INFO cpu reads the main thread's and the process's getrusage
		// apart: the thread's may pass the process's by a hair (CI saw
		// 21µs in 21ms), never by a hundredth.
		if s.MainCPU <= 0 || s.MainCPU > s.CPU+max(s.CPU/100, 20*time.Microsecond) {
			t.Errorf("shard %s: main thread %s of %s", s.Master, s.MainCPU, s.CPU)
		}
		if s.Share < 0.2 || s.Share > 0.45 || s.Replica == "" || s.Ceiling(r) <= 0 {
			t.Errorf("shard %+v: share %.2f, replica %q, ceiling %.0f", s, s.Share, s.Replica, s.Ceiling(r))
		}
	}
	var leaders int
	var nats time.Duration
	for _, n := range r.NATSNodes {
		nats += n.CPU
		if n.StreamLeader {
			leaders++
		}
	}
	if len(r.NATSNodes) != 3 || leaders != 1 || nats != r.NATS {
		t.Errorf("NATS nodes %+v: %d stream leaders, CPU %s of %s", r.NATSNodes, leaders, nats, r.NATS)
	}
	ext := float64(r.Outcomes["external"]) / events
	if share < 1-ext-0.001 || share > 1-ext+0.001 || masters != r.RedisMasters {
		t.Errorf("shares sum to %.3f, want %.3f (all but external events); masters' CPU %s, total %s", share, 1-ext, masters, r.RedisMasters)
	}
	if r.Suspensions < 1 || len(r.NoticeBytes) != int(r.Suspensions) {
		t.Errorf("%d suspensions, %d notice hashes", r.Suspensions, len(r.NoticeBytes))
	}
	if per := float64(r.AccountBytes) / float64(r.RedisAccts); per < 100 || per > 4096 {
		t.Errorf("%.0f bytes per account", per)
	}
	if res.Machine.Cores < 1 || res.Machine.LoadAvg == "" || !strings.Contains(res.Machine.NATS, "2.") || res.Machine.Redis == "" {
		t.Errorf("machine %+v", res.Machine)
	}
	if !strings.Contains(out.String(), "aupd µs/ev") {
		t.Errorf("table without its header:\n%s", out.String())
	}
}

// TestStandaloneBesideCluster runs a tiny measurement with the standalone
// phase: one aupd process on the Cluster, then one on a standalone Redis
// with a replica, and checks the standalone drain's figures and the
// comparison the summary prints.
func TestStandaloneBesideCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("brings up 3 NATS nodes, 8 Redis nodes and two aupd processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // it may wait its turn on the cluster lock
	defer cancel()
	const events, accounts = 8000, 400
	res, err := Run(ctx, Config{Dir: t.TempDir(), Events: events, Accounts: accounts, Procs: []int{1}, Seed: 11,
		Timeout: time.Minute, Standalone: true})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res.Print(&out)
	t.Log("\n" + out.String())
	sa := res.Standalone
	if sa == nil || len(res.Runs) != 1 {
		t.Fatalf("standalone %v, %d cluster runs; want a standalone drain and 1 run", sa, len(res.Runs))
	}
	for _, p := range append(sa.Problems, res.Runs[0].Problems...) {
		t.Error(p) // every event applied once, exact windows, a notice per suspension, CPU positive
	}
	if !sa.Standalone || sa.Procs != 1 || sa.WindowEvents < 1 || sa.WindowEvents > events {
		t.Errorf("standalone %v, procs %d, %d events in the window", sa.Standalone, sa.Procs, sa.WindowEvents)
	}
	if len(sa.Shards) != 1 {
		t.Fatalf("%d standalone masters, want 1", len(sa.Shards))
	}
	s := sa.Shards[0]
	ext := float64(sa.Outcomes["external"]) / events
	if s.Replica == "" || s.Share < 1-ext-0.001 || s.Share > 1-ext+0.001 {
		t.Errorf("standalone master %+v: want a replica and every local event (share %.3f)", s, 1-ext)
	}
	// The main thread's and the process's CPU are read apart (INFO cpu's
	// getrusage of each) at both ends of the window, and the kernel splits
	// each one's time on its own: the thread's may pass the process's by
	// a hair (seen: 21.244ms of 21.223ms), never by a hundredth.
	if s.MainCPU <= 0 || s.MainCPU > s.CPU+max(s.CPU/100, 20*time.Microsecond) || s.ReplicaCPU <= 0 {
		t.Errorf("standalone CPU: main thread %s of %s, replica %s", s.MainCPU, s.CPU, s.ReplicaCPU)
	}
	// An event costs a Redis main thread some microseconds; far beyond a
	// millisecond is a mistake of units.
	for name, us := range map[string]float64{"standalone": sa.MainPerEvent(), "cluster": res.Runs[0].MainPerEvent()} {
		if us <= 0 || us > 1000 {
			t.Errorf("%s main thread %.2f µs an event", name, us)
		}
	}
	if sa.ReplicaPerEvent() <= 0 || res.Runs[0].ReplicaPerEvent() <= 0 {
		t.Errorf("replicas: standalone %.2f, cluster %.2f µs an event", sa.ReplicaPerEvent(), res.Runs[0].ReplicaPerEvent())
	}
	want := fmt.Sprintf("%.2fx the standalone figure", res.Runs[0].MainPerEvent()/sa.MainPerEvent())
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "1 standalone") {
		t.Errorf("summary without the ratio %q or the standalone rows:\n%s", want, out.String())
	}
}

// TestExpect holds what a backlog must leave on a hand-made set: copies
// count once in a window, the window is capped, external inbound is not
// in Redis, ham is statistics only.
func TestExpect(t *testing.T) {
	now := time.Now()
	ev := func(id, acct string, d rules.Direction, v rules.Verdict, local bool) loadtest.Event {
		return loadtest.Event{ID: id, Account: acct, Direction: d, Verdict: v, Local: local, Time: now}
	}
	evs := []loadtest.Event{
		ev("1", "a@example.com", rules.Outbound, rules.Spam, true),
		ev("1", "a@example.com", rules.Outbound, rules.Spam, true), // a copy
		ev("2", "a@example.com", rules.Outbound, rules.Phish, true),
		ev("3", "a@example.com", rules.Outbound, rules.Virus, true), // over the cap of 2
		ev("4", "b@example.com", rules.Outbound, rules.Ham, true),
		ev("5", "x@elsewhere.org", rules.Inbound, rules.Spam, false),
	}
	x := expect(evs, config.Default().AUP, 2)
	if x.counting != 4 || x.stats != 1 || x.external != 1 {
		t.Errorf("counting %d, stats %d, external %d; want 4, 1, 1", x.counting, x.stats, x.external)
	}
	if len(x.windows) != 1 || x.windows["a@example.com"] != 2 {
		t.Errorf("windows %v", x.windows)
	}
	if len(x.touched) != 2 || len(x.slots) != 2 {
		t.Errorf("touched %v", x.touched)
	}
}

// TestProcCPU reads this process's CPU, which grows with work.
func TestProcCPU(t *testing.T) {
	a, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for time.Now().Before(deadline) {
		for i := range 1_000_000 {
			x += i % 7
		}
		b, err := procCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if b > a {
			return
		}
	}
	t.Errorf("CPU did not grow over 5s of work (%d)", x)
}

func TestProcCPUNoProcess(t *testing.T) {
	if _, err := procCPU(0); err == nil {
		t.Error("pid 0: no error")
	}
}

func TestLabel(t *testing.T) {
	s := `aupd_events_total{direction="outbound",outcome="counted",verdict="spam"}`
	if got := loadtest.Label(s, "outcome"); got != "counted" {
		t.Errorf("outcome %q", got)
	}
	if got := loadtest.Label(s, "missing"); got != "" {
		t.Errorf("missing %q", got)
	}
}
