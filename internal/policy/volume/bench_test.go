package volume

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/policy/postfix"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// BenchmarkPolicyServerVolume measures the Postfix policy server on 8
// connections, as Postfix's smtpd processes hold them, with the volume
// limits off and on, over the real store on a Redis of its own (Redis's
// clock, as in production). Each message is what the shipped main.cf
// makes Postfix ask: a request per recipient at RCPT time (two
// recipients), then one at END-OF-MESSAGE; with the limits off, the
// END-OF-MESSAGE request is the sender check alone. Senders are drawn from
// 10,000 accounts. The two run in alternating rounds of a fixed number of
// messages, so that a machine whose speed drifts (other work on it) moves
// both alike, and it prints each round's requests/s and p99 of a
// request's round trip, the median ratio of on to off, the Redis commands
// a request sends (counted in the client) and the Redis CPU a message
// costs (INFO cpu), and the memory of the volume record per active sender
// (MEMORY USAGE).
//
//	go test -run '^$' -bench PolicyServerVolume ./internal/policy/volume/
func BenchmarkPolicyServerVolume(b *testing.B) {
	// A Redis of its own: the local one is shared with other tests, whose
	// scripts would count in these figures.
	rdb, prefix := testutil.PrivateRedis(b), "aup"
	var cmds, trips atomic.Int64
	rdb.AddHook(redisCounter{&cmds, &trips})
	limits := []rules.VolumeLimit{
		{Name: "hourly", Window: time.Hour, Recipients: 65000, Action: rules.VolumeThrottle},
		{Name: "daily", Window: 24 * time.Hour, Recipients: 65000, Action: rules.VolumeSuspend},
	}
	const conns, senders, rcpts, perConn, rounds = 8, 10000, 2, 500, 11
	servers := map[string]string{"off": benchServer(b, rdb, prefix, nil), "on": benchServer(b, rdb, prefix, limits)}
	clients := map[string][]*benchConn{}
	for mode, addr := range servers {
		for range conns {
			clients[mode] = append(clients[mode], dialBench(b, addr))
		}
	}
	type result struct {
		rps, cmdsPerReq, tripsPerReq, cpuPerMsg, selfPerMsg float64
		p99                                                 time.Duration
	}
	results := map[string][]result{}
	var seq atomic.Int64
	for range b.N {
		for range rounds {
			for _, mode := range []string{"off", "on"} {
				cmds.Store(0)
				trips.Store(0)
				cpu0, self0 := redisCPU(b, rdb), selfCPU(b)
				lat := make([][]time.Duration, conns)
				start := time.Now()
				var wg sync.WaitGroup
				for c := range conns {
					wg.Add(1)
					go func() {
						defer wg.Done()
						lat[c] = clients[mode][c].run(b, c, int(seq.Add(1)), perConn, senders, rcpts)
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				all := slices.Concat(lat...)
				slices.Sort(all)
				results[mode] = append(results[mode], result{
					rps: float64(len(all)) / elapsed.Seconds(), p99: all[len(all)*99/100],
					cmdsPerReq:  float64(cmds.Load()) / float64(len(all)),
					tripsPerReq: float64(trips.Load()) / float64(len(all)),
					cpuPerMsg:   (redisCPU(b, rdb) - cpu0) / float64(conns*perConn),
					selfPerMsg:  (selfCPU(b) - self0) / float64(conns*perConn),
				})
			}
		}
	}
	off, on := results["off"], results["on"]
	ratios := make([]float64, len(on))
	fmt.Printf("\npolicy server, %d connections, %d senders, %d recipients and END-OF-MESSAGE per message, %d messages a round\n",
		conns, senders, rcpts, conns*perConn)
	fmt.Printf("%-6s %10s %9s %10s %9s %7s\n", "round", "off req/s", "off p99", "on req/s", "on p99", "on/off")
	for i := range on {
		ratios[i] = on[i].rps / off[i].rps
		fmt.Printf("%-6d %10.0f %9s %10.0f %9s %6.2fx\n", i+1, off[i].rps, off[i].p99.Round(time.Microsecond),
			on[i].rps, on[i].p99.Round(time.Microsecond), ratios[i])
	}
	med := func(rs []result, f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	slices.Sort(ratios)
	p99 := func(r result) float64 { return float64(r.p99.Microseconds()) / 1000 }
	fmt.Printf("median: off %.0f req/s, p99 %.2f ms; on %.0f req/s, p99 %.2f ms; on/off %.3fx (rounds %.2f-%.2fx)\n",
		med(off, func(r result) float64 { return r.rps }), med(off, p99),
		med(on, func(r result) float64 { return r.rps }), med(on, p99), ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1])
	fmt.Printf("Redis commands a request sends: off %.2f, on %.2f, in round trips: off %.2f, on %.2f\n",
		med(off, func(r result) float64 { return r.cmdsPerReq }), med(on, func(r result) float64 { return r.cmdsPerReq }),
		med(off, func(r result) float64 { return r.tripsPerReq }), med(on, func(r result) float64 { return r.tripsPerReq }))
	fmt.Printf("Redis CPU a message costs: off %.0f µs, on %.0f µs\n",
		med(off, func(r result) float64 { return r.cpuPerMsg * 1e6 }), med(on, func(r result) float64 { return r.cpuPerMsg * 1e6 }))
	fmt.Printf("this process's CPU a message costs (the policy server and the 8 clients): off %.0f µs, on %.0f µs\n",
		med(off, func(r result) float64 { return r.selfPerMsg * 1e6 }), med(on, func(r result) float64 { return r.selfPerMsg * 1e6 }))
	bytes, n := volumeMemory(b, rdb, prefix)
	fmt.Printf("volume record: %.0f bytes per active sender (MEMORY USAGE, mean of %d senders, two windows of recipients)\n", bytes, n)
	b.ReportMetric(ratios[len(ratios)/2], "on/off")
	b.ReportMetric(med(on, p99), "on-p99-ms")
	b.ReportMetric(0, "ns/op")
}

// redisCounter counts the commands a client sends and the round trips it
// waits for (a pipeline is one).
type redisCounter struct{ cmds, trips *atomic.Int64 }

func (redisCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h redisCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.cmds.Add(1)
		h.trips.Add(1)
		return next(ctx, cmd)
	}
}

func (h redisCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.cmds.Add(int64(len(cmds)))
		h.trips.Add(1)
		return next(ctx, cmds)
	}
}

// selfCPU is the CPU time this process has used, in seconds.
func selfCPU(b *testing.B) float64 {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// redisCPU is the CPU time Redis has used, in seconds (INFO cpu).
func redisCPU(b *testing.B, rdb *redis.Client) float64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (name == "used_cpu_sys" || name == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			total += f
		}
	}
	return total
}

// benchServer starts a policy server on a store under prefix with the
// provider's volume limits limits, and returns its address.
func benchServer(b *testing.B, rdb *redis.Client, prefix string, limits []rules.VolumeLimit) string {
	b.Helper()
	st := store.New(rdb, prefix)
	dir, err := companies.New(nil, prefix, nil)
	if err != nil {
		b.Fatal(err)
	}
	prov := rules.Provider{Mode: rules.ModeEnforce, Volume: limits}
	ctr, err := New(Options{Store: st, Directory: dir, Policy: func() rules.Provider { return prov }})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := postfix.New(postfix.Config{}, lookup{st, dir}, postfix.Options{Volume: ctr})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().String()
}

type benchConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialBench(b *testing.B, addr string) *benchConn {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return &benchConn{c: c, r: bufio.NewReaderSize(c, 4096)}
}

// run sends n messages of rcpts recipients each, from senders drawn in
// turn, and returns the round trip of every request; round makes its
// transactions' ids its own.
func (bc *benchConn) run(b *testing.B, id, round, n, senders, rcpts int) []time.Duration {
	lat := make([]time.Duration, 0, n*(rcpts+1))
	var req strings.Builder
	for i := range n {
		sender := fmt.Sprintf("user%d@example.com", (round*n*8+i*8+id)%senders)
		common := fmt.Sprintf("request=smtpd_access_policy\nprotocol_name=ESMTP\nclient_address=192.0.2.%d\nsasl_username=%s\nsender=%s\ninstance=%x.%x.%x\n",
			1+id, sender, sender, id, round, i)
		for r := range rcpts + 1 {
			req.Reset()
			req.WriteString(common)
			if r < rcpts {
				fmt.Fprintf(&req, "protocol_state=RCPT\nrecipient=friend%d@elsewhere.test\nrecipient_count=0\n", r)
			} else {
				fmt.Fprintf(&req, "protocol_state=END-OF-MESSAGE\nqueue_id=Q%x%x%x\nrecipient_count=%d\n", id, round, i, rcpts)
			}
			req.WriteString("\n")
			start := time.Now()
			if _, err := bc.c.Write([]byte(req.String())); err != nil {
				b.Error(err)
				return lat
			}
			line, err := bc.r.ReadString('\n')
			if err == nil {
				_, err = bc.r.ReadString('\n')
			}
			if err != nil {
				b.Error(err)
				return lat
			}
			lat = append(lat, time.Since(start))
			if line != "action=DUNNO\n" {
				b.Errorf("answer %q", line)
				return lat
			}
		}
	}
	return lat
}

// volumeMemory is the mean MEMORY USAGE of the volume records under
// prefix, and how many there are.
func volumeMemory(b *testing.B, rdb *redis.Client, prefix string) (float64, int) {
	b.Helper()
	ctx := context.Background()
	var total, n int64
	iter := rdb.Scan(ctx, 0, prefix+":{*}:v", 1000).Iterator()
	for iter.Next(ctx) && n < 2000 {
		m, err := rdb.MemoryUsage(ctx, iter.Val(), 0).Result()
		if err != nil {
			b.Fatal(err)
		}
		total += m
		n++
	}
	if err := iter.Err(); err != nil {
		b.Fatal(err)
	}
	if n == 0 {
		return 0, 0
	}
	return float64(total) / float64(n), int(n)
}
