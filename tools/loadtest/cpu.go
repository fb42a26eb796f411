package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime/metrics"
	"strconv"
	"syscall"
	"time"
)

// cpuMark is the CPU time used so far by Redis's main thread (the one
// that runs the scripts; INFO cpu) and by this process (the in-process
// NATS server when there is one, aupd, and the tool itself), and the
// machine's CPU time by /proc/stat: all of it, and what the hypervisor
// took for other guests (steal), which on a shared virtual machine slows
// every figure of a phase. It also holds what this process has allocated
// on the heap, in bytes and objects (runtime/metrics, which stops
// nothing).
type cpuMark struct {
	redis, self  time.Duration
	ok           bool
	steal, total uint64 // /proc/stat ticks; total 0: not known
	allocB       uint64
	allocN       uint64
}

// heapAllocs reads the bytes and objects this process has allocated.
func heapAllocs() (bytes, objects uint64) {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return 0, 0
	}
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

func (r *runner) cpuNow(ctx context.Context) cpuMark {
	var m cpuMark
	info, err := r.rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return m
	}
	var sum float64
	for _, f := range []string{"used_cpu_user_main_thread", "used_cpu_sys_main_thread"} {
		x, err := strconv.ParseFloat(infoField(info, f), 64)
		if err != nil {
			return m // Redis before 6.2 has no main-thread figures
		}
		sum += x
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return m
	}
	m.redis = time.Duration(sum * float64(time.Second))
	m.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	m.ok = true
	m.steal, m.total = machineTicks()
	m.allocB, m.allocN = heapAllocs()
	return m
}

// machineTicks reads the first line of /proc/stat ("cpu user nice system
// idle iowait irq softirq steal ..."): steal and the sum of the first
// eight. Zeros where there is no /proc/stat.
func machineTicks() (steal, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return 0, 0
	}
	for i, x := range f[1:9] {
		n, err := strconv.ParseUint(string(x), 10, 64)
		if err != nil {
			return 0, 0
		}
		total += n
		if i == 7 {
			steal = n
		}
	}
	return steal, total
}

// cpuPerEvent says how much CPU each of n events cost Redis and this
// process between two marks.
func cpuPerEvent(from, to cpuMark, n int) string {
	if !from.ok || !to.ok || n == 0 {
		return "not measured"
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	out := fmt.Sprintf("Redis main thread %.1f µs, this process %.1f µs", us(to.redis-from.redis), us(to.self-from.self))
	if from.total > 0 && to.total > from.total {
		out += fmt.Sprintf("; hypervisor steal %.0f%% of the machine's CPU time", 100*float64(to.steal-from.steal)/float64(to.total-from.total))
	}
	if to.allocN > from.allocN {
		out += fmt.Sprintf("; this process allocated %.0f B in %.1f objects an event",
			float64(to.allocB-from.allocB)/float64(n), float64(to.allocN-from.allocN)/float64(n))
	}
	return out
}
