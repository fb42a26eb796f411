package loadtest

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestMachineTicks reads this machine's /proc/stat: its total grows while
// the test burns CPU, steal is part of it, and cpuPerEvent reports the
// share only when both marks have it.
func TestMachineTicks(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc/stat here")
	}
	s0, t0 := machineTicks()
	if t0 == 0 || s0 > t0 {
		t.Fatalf("steal %d of total %d", s0, t0)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	s1, t1 := machineTicks()
	if t1 <= t0 || s1 < s0 || s1-s0 > t1-t0 {
		t.Fatalf("from steal %d of %d to steal %d of %d", s0, t0, s1, t1)
	}
	from := cpuMark{ok: true, steal: s0, total: t0}
	to := cpuMark{ok: true, redis: time.Millisecond, self: 2 * time.Millisecond, steal: s1, total: t1}
	if got := cpuPerEvent(from, to, 10); !strings.HasPrefix(got, "Redis main thread 100.0 µs, this process 200.0 µs; hypervisor steal ") {
		t.Fatalf("cpuPerEvent = %q", got)
	}
	from.total = 0
	if got := cpuPerEvent(from, to, 10); got != "Redis main thread 100.0 µs, this process 200.0 µs" {
		t.Fatalf("without /proc/stat at one mark: %q", got)
	}
}
