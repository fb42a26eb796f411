package sessionagent

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAgentIdle holds AUPD_BENCH_SESSIONS (default 10,000) sessions
// in the agent, built and run as its own process (aupd-sessiond agent),
// against the real session-lock handler on Redis, and prints what they
// cost while idle: the agent's CPU as a fraction of a core over a window
// (AUPD_BENCH_WINDOW, default 30s) with renewals running (lease
// AUPD_BENCH_LEASE, default 60s, renewed every third: faster than the
// default 20m, so that the window sees many), the renewals it sent, and
// the agent's resident memory and the kernel's slab per session. The
// sessions are pidfds of 100 live processes, each opened 1% of the times.
//
//	go test -run '^$' -bench AgentIdle -benchtime 1x ./internal/sessionagent/
func BenchmarkAgentIdle(b *testing.B) {
	n := envInt("AUPD_BENCH_SESSIONS", 10000)
	window := envDuration("AUPD_BENCH_WINDOW", 30*time.Second)
	lease := envDuration("AUPD_BENCH_LEASE", time.Minute)
	e := newEnv(b)
	var renewals atomic.Int64
	inner := e.srv.Config.Handler
	e.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/renew") {
			renewals.Add(1)
		}
		inner.ServeHTTP(w, r)
	})
	var conns atomic.Int64
	e.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "aupd-sessiond")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/aupd-sessiond").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := e.config(dir, lease, lease/3)
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(e.token), 0o600); err != nil {
		b.Fatal(err)
	}
	conf := fmt.Sprintf("aupd_url: %s\ntoken_file: %s\nsocket: %s\nstate_file: %s\nlease: %s\nrenew_every: %s\n",
		cfg.URL, filepath.Join(dir, "token"), cfg.Socket, cfg.StateFile, lease, lease/3)
	if err := os.WriteFile(filepath.Join(dir, "sessiond.yml"), []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	agent := exec.Command(bin, "agent", "-config", filepath.Join(dir, "sessiond.yml"))
	agent.Stderr = os.Stderr
	if err := agent.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	waitFor(b, "the agent's socket", func() bool { _, err := os.Stat(cfg.Socket); return err == nil })
	pid := agent.Process.Pid

	procs := make([]*child, 100)
	for i := range procs {
		procs[i] = startChild(b)
	}
	rss0, slab0 := rssOf(b, pid), meminfo(b, "Slab")
	began := time.Now()
	for i := range n {
		r, err := Ask(cfg.Socket, 10*time.Second, "imap", fmt.Sprintf("user%d@example.test", i), "192.0.2.1", procs[i%len(procs)].pidfd)
		if r != Granted || err != nil {
			b.Fatalf("session %d: %q, %v", i, r, err)
		}
	}
	b.Logf("%d sessions taken in %s", n, time.Since(began).Round(time.Millisecond))
	b.ResetTimer()
	cpu0, r0, t0 := cpuOf(b, pid), renewals.Load(), time.Now()
	time.Sleep(window) // the measurement window
	cpu1, r1, t1 := cpuOf(b, pid), renewals.Load(), time.Now()
	b.StopTimer()
	rss1, slab1 := rssOf(b, pid), meminfo(b, "Slab")
	frac := (cpu1 - cpu0).Seconds() / t1.Sub(t0).Seconds()
	rate := float64(r1-r0) / t1.Sub(t0).Seconds()
	perRenew := time.Duration(0)
	if r1 > r0 {
		perRenew = (cpu1 - cpu0) / time.Duration(r1-r0)
	}
	dflt := float64(n) / 600 // renewals a second at the default lease (20m, renewed every 10m)
	fmt.Printf("agent, %d idle sessions, %s window: CPU %.4f of a core (%.3f%%), %.0f renewals/s (lease %s), %s of CPU a renewal\n",
		n, window, frac, 100*frac, rate, lease, perRenew)
	fmt.Printf("  at the default lease (20m, renewed every 10m: %.1f renewals/s): about %.3f%% of a core\n", dflt, 100*dflt*perRenew.Seconds())
	fmt.Printf("  HTTP connections opened to aupd: %d\n", conns.Load())
	fmt.Printf("  agent RSS %+d KiB (%d B a session); kernel slab %+d KiB (%d B a session)\n",
		(rss1-rss0)/1024, (rss1-rss0)/int64(n), (slab1-slab0)/1024, (slab1-slab0)/int64(n))
	b.ReportMetric(frac, "core-fraction")
	b.ReportMetric(float64(rss1-rss0)/float64(n), "rss-B/session")
	b.ReportMetric(float64(slab1-slab0)/float64(n), "slab-B/session")
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// cpuOf returns the user and system CPU time process pid has used.
func cpuOf(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)        // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64)        // field 15
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// rssOf returns process pid's resident memory in bytes.
func rssOf(tb testing.TB, pid int) int64 {
	tb.Helper()
	return fieldKB(tb, "/proc/"+strconv.Itoa(pid)+"/status", "VmRSS")
}

// meminfo returns a /proc/meminfo figure in bytes.
func meminfo(tb testing.TB, name string) int64 { return fieldKB(tb, "/proc/meminfo", name) }

func fieldKB(tb testing.TB, path, name string) int64 {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb * 1024
		}
	}
	tb.Fatalf("no %s in %s", name, path)
	return 0
}
