package loadtest

import (
	"context"
	"fmt"
	"strconv"
	"syscall"
	"time"
)

// cpuMark is the CPU time used so far by Redis's main thread (the one
// that runs the scripts; INFO cpu) and by this process (the in-process
// NATS server when there is one, aupd, and the tool itself).
type cpuMark struct {
	redis, self time.Duration
	ok          bool
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
	return m
}

// cpuPerEvent says how much CPU each of n events cost Redis and this
// process between two marks.
func cpuPerEvent(from, to cpuMark, n int) string {
	if !from.ok || !to.ok || n == 0 {
		return "not measured"
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	return fmt.Sprintf("Redis main thread %.1f µs, this process %.1f µs", us(to.redis-from.redis), us(to.self-from.self))
}
