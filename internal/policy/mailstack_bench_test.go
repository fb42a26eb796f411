package policy_test

import (
	"bufio"
	"fmt"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkMailstackIdleIMAP holds AUPD_BENCH_SESSIONS (default 1,000)
// idle IMAP sessions through the real Dovecot with aupd-sessiond (lease
// 20m, renewed every 10m, as deploy/dovecot/sessiond.yml) and prints what
// they cost over a window (AUPD_BENCH_WINDOW, default 30s): the agent's
// CPU; the CPU of the whole mail stack (Dovecot's master and every
// process under it, the agent, and this test process with aupd and the
// clients in it), with and without the sessions; the whole host's busy CPU
// (which counts anything else the host runs); the agent's memory, and
// Dovecot's imap processes' memory for comparison.
// Root only, like TestMailstack.
//
//	go test -run '^$' -bench MailstackIdleIMAP -benchtime 1x ./internal/policy/
func BenchmarkMailstackIdleIMAP(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("AUPD_BENCH_SESSIONS")); err == nil && v > 0 {
		n = v
	}
	window := 30 * time.Second
	if v, err := time.ParseDuration(os.Getenv("AUPD_BENCH_WINDOW")); err == nil && v > 0 {
		window = v
	}
	ms := startMailstack(b, fmt.Sprintf("MS_MAX_SESSIONS=%d", n+100), "MS_SESSIONLOCK_LEASE=1200", "MS_SESSIONLOCK_RENEW=600",
		"MS_SESSIONLOCK_KEEPALIVE=60 15 4 120")
	agent := ms.agentPID(b)
	acct := "active@" + domain

	// A window without sessions, for the host's baseline.
	master := ms.dovecotPID(b)
	host0, stack0, t0 := hostBusy(b), stackCPU(b, master, agent), time.Now()
	time.Sleep(window) // the measurement window
	baseline := (hostBusy(b) - host0).Seconds() / time.Since(t0).Seconds()
	stackBase := (stackCPU(b, master, agent) - stack0).Seconds() / time.Since(t0).Seconds()
	rss0 := procKB(b, agent, "VmRSS")

	conns := make([]*textproto.Conn, n)
	began := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				c, r := imapOpen(b, ms.imap, acct, password)
				if !strings.HasPrefix(r, "OK") {
					mu.Lock()
					failed = append(failed, r)
					mu.Unlock()
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		b.Fatalf("%d logins failed, first: %q", len(failed), failed[0])
	}
	ms.waitLocks(b, acct, n)
	b.Logf("%d IMAP sessions open in %s", n, time.Since(began).Round(time.Millisecond))

	b.ResetTimer()
	cpu0, host1, stack1, t1 := procCPU(b, agent), hostBusy(b), stackCPU(b, master, agent), time.Now()
	time.Sleep(window) // the measurement window
	cpu1, host2, stack2, t2 := procCPU(b, agent), hostBusy(b), stackCPU(b, master, agent), time.Now()
	b.StopTimer()
	secs := t2.Sub(t1).Seconds()
	agentFrac := (cpu1 - cpu0).Seconds() / secs
	hostFrac := (host2 - host1).Seconds() / secs
	stackFrac := (stack2 - stack1).Seconds() / secs
	rss1 := procKB(b, agent, "VmRSS")
	imapN, imapRSS := imapProcesses(b)
	fmt.Printf("mailstack, %d idle IMAP sessions, %s window:\n", n, window)
	fmt.Printf("  agent CPU %.5f of a core (%.3f%%)\n", agentFrac, 100*agentFrac)
	fmt.Printf("  mail stack CPU %.4f of a core, %.4f without sessions (extra %+.4f)\n", stackFrac, stackBase, stackFrac-stackBase)
	fmt.Printf("  host busy %.4f of a core, %.4f without sessions (extra %+.4f; counts whatever else the host runs)\n",
		hostFrac, baseline, hostFrac-baseline)
	fmt.Printf("  agent RSS %+d KiB (%d B a session); %d imap processes, %d KiB RSS each on average (Dovecot's, for comparison)\n",
		(rss1-rss0)/1024, (rss1-rss0)/int64(n), imapN, imapRSS/max(int64(imapN), 1)/1024)
	b.ReportMetric(agentFrac, "agent-core-fraction")
	b.ReportMetric(stackFrac-stackBase, "stack-extra-core-fraction")
	b.ReportMetric(float64(rss1-rss0)/float64(n), "agent-rss-B/session")

	for _, c := range conns {
		_ = c.PrintfLine("a2 LOGOUT")
		c.Close()
	}
	ms.waitLocks(b, acct, 0)
}

// hostBusy returns the CPU time the host has spent not idle (all cores).
func hostBusy(tb testing.TB) time.Duration {
	tb.Helper()
	f, err := os.Open("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	fields := strings.Fields(sc.Text())[1:] // user nice system idle iowait irq softirq steal ...
	var busy int64
	for i, v := range fields {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is counted in user already
			continue
		}
		x, _ := strconv.ParseInt(v, 10, 64)
		busy += x
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

// procCPU returns the user and system CPU time process pid has used.
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100
}

// procKB returns a /proc/PID/status figure in bytes.
func procKB(tb testing.TB, pid int, name string) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// imapProcesses counts the host's imap processes and sums their RSS.
func imapProcesses(tb testing.TB) (int, int64) {
	tb.Helper()
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	var n int
	var rss int64
	for _, c := range comms {
		b, err := os.ReadFile(c)
		if err != nil || strings.TrimSpace(string(b)) != "imap" {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(c)))
		n++
		rss += procKB(tb, pid, "VmRSS")
	}
	return n, rss
}

// dovecotPID returns the pid of the mail stack's Dovecot master.
func (ms *mailstack) dovecotPID(tb testing.TB) int {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(ms.dir, "dovecot/run/master.pid"))
	if err != nil {
		tb.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		tb.Fatal(err)
	}
	return pid
}

// stackCPU returns the CPU time used by Dovecot's master and its children,
// the agent and this process. (Children that exited are not counted: the
// idle window has none.)
func stackCPU(tb testing.TB, master, agent int) time.Duration {
	tb.Helper()
	total := procCPU(tb, agent) + procCPU(tb, os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if ppid, _ := strconv.Atoi(f[1]); pid == master || ppid == master {
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			total += time.Duration(ut+st) * time.Second / 100
		}
	}
	return total
}
