package scale

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/cluster"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which the kernel fixes at 100 in that interface whatever its own tick.
const userHZ = 100

// procCPU is the CPU time (user + system, every thread) a process has
// used since it started, from /proc/<pid>/stat; 10 ms resolution.
func procCPU(pid int) (time.Duration, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("no process (pid %d)", pid)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: the fields that
	// count start after its closing parenthesis, with the state (field 3).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks int64
	for _, x := range f[11:13] { // utime (field 14), stime (field 15)
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// redisCPU is the CPU time a Redis node has used since it started (INFO
// cpu, microsecond resolution): all its threads (used_cpu_user +
// used_cpu_sys), and its main thread alone, the one that runs commands
// and scripts (used_cpu_*_main_thread).
func redisCPU(ctx context.Context, n *cluster.RedisNode) (all, main time.Duration, err error) {
	v, err := n.Do(ctx, "INFO", "cpu")
	if err != nil {
		return 0, 0, fmt.Errorf("redis %s: info cpu: %w", n.Name, err)
	}
	f := map[string]float64{}
	for line := range strings.Lines(fmt.Sprint(v)) {
		k, x, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(k, "used_cpu_") {
			continue
		}
		if f[k], err = strconv.ParseFloat(x, 64); err != nil {
			return 0, 0, fmt.Errorf("redis %s: %s: %w", n.Name, k, err)
		}
	}
	for _, k := range []string{"used_cpu_user", "used_cpu_sys", "used_cpu_user_main_thread", "used_cpu_sys_main_thread"} {
		if _, ok := f[k]; !ok {
			return 0, 0, fmt.Errorf("redis %s: INFO cpu has no %s", n.Name, k)
		}
	}
	sec := func(x float64) time.Duration { return time.Duration(x * float64(time.Second)) }
	return sec(f["used_cpu_user"] + f["used_cpu_sys"]), sec(f["used_cpu_user_main_thread"] + f["used_cpu_sys_main_thread"]), nil
}

// redisInfoInt reads one integer field of an INFO section of a node.
func redisInfoInt(ctx context.Context, n *cluster.RedisNode, section, field string) (int64, error) {
	v, err := n.Do(ctx, "INFO", section)
	if err != nil {
		return 0, fmt.Errorf("redis %s: info %s: %w", n.Name, section, err)
	}
	for line := range strings.Lines(fmt.Sprint(v)) {
		if x, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return strconv.ParseInt(x, 10, 64)
		}
	}
	return 0, fmt.Errorf("redis %s: INFO %s has no %s", n.Name, section, field)
}

// Machine is where the figures were taken.
type Machine struct {
	Cores   int    // logical CPUs
	Model   string // CPU model name
	LoadAvg string // /proc/loadavg at the start of the run (1, 5, 15 min)
	Go      string
	NATS    string // nats-server version
	Redis   string // redis-server version
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Model: "unknown", Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}
