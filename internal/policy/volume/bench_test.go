package volume

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
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
// limits off and on, in alternating rounds of one run, over the real
// store on a Redis of its own (Redis's clock, as in production). Each
// message is what the shipped main.cf makes Postfix ask: a request per
// recipient at RCPT time (two recipients), then one at END-OF-MESSAGE;
// with the limits off, the END-OF-MESSAGE request is only the sender
// check. Senders are drawn from 10,000 accounts. It prints requests/s and
// the p99 of a request's round trip per round, the ratio of the rounds
// on and off, and the Redis memory of the volume record per active
// sender (MEMORY USAGE).
//
//	go test -run '^$' -bench PolicyServerVolume ./internal/policy/volume/
func BenchmarkPolicyServerVolume(b *testing.B) {
	// A Redis of its own: the local one is shared with other tests, whose
	// scripts would count in these figures.
	rdb, prefix := testutil.PrivateRedis(b), "aup"
	limits := []rules.VolumeLimit{
		{Name: "hourly", Window: time.Hour, Recipients: 65000, Action: rules.VolumeThrottle},
		{Name: "daily", Window: 24 * time.Hour, Recipients: 65000, Action: rules.VolumeSuspend},
	}
	const conns, senders, rcpts = 8, 10000, 2
	type result struct {
		rps float64
		p99 time.Duration
	}
	const rounds = 3
	results := map[string]*[rounds]result{"off": {}, "on": {}}
	for round := 1; round <= rounds; round++ {
		for _, mode := range []string{"off", "on"} {
			b.Run(fmt.Sprintf("round%d/%s", round, mode), func(b *testing.B) {
				var lim []rules.VolumeLimit
				if mode == "on" {
					lim = limits
				}
				addr := benchServer(b, rdb, prefix, lim)
				cl := make([]*benchConn, conns)
				for i := range cl {
					cl[i] = dialBench(b, addr)
				}
				lat := make([][]time.Duration, conns)
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for c := range conns {
					wg.Add(1)
					go func() {
						defer wg.Done()
						lat[c] = cl[c].run(b, c, b.N, senders, rcpts)
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				all := slices.Concat(lat...)
				slices.Sort(all)
				r := result{rps: float64(len(all)) / elapsed.Seconds(), p99: all[len(all)*99/100]}
				b.ReportMetric(r.rps, "req/s")
				b.ReportMetric(float64(r.p99.Microseconds())/1000, "p99-ms")
				b.ReportMetric(0, "ns/op")
				results[mode][round-1] = r // the last run, of the final b.N, is kept
			})
		}
	}
	b.StopTimer()
	off, on := results["off"], results["on"]
	fmt.Printf("\npolicy server, %d connections, %d senders, %d recipients and END-OF-MESSAGE per message\n", conns, senders, rcpts)
	fmt.Printf("%-6s %12s %9s %12s %9s %7s\n", "round", "off req/s", "off p99", "on req/s", "on p99", "on/off")
	for i := range rounds {
		fmt.Printf("%-6d %12.0f %9s %12.0f %9s %6.2fx\n", i+1, off[i].rps, off[i].p99.Round(time.Microsecond),
			on[i].rps, on[i].p99.Round(time.Microsecond), on[i].rps/off[i].rps)
	}
	bytes, n := volumeMemory(b, rdb, prefix)
	fmt.Printf("volume record: %.0f bytes per active sender (MEMORY USAGE, mean of %d senders, two windows of recipients)\n", bytes, n)
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
// turn, and returns the round trip of every request.
func (bc *benchConn) run(b *testing.B, id, n, senders, rcpts int) []time.Duration {
	lat := make([]time.Duration, 0, n*(rcpts+1))
	var req strings.Builder
	for i := range n {
		sender := fmt.Sprintf("user%d@example.com", (i*8+id)%senders)
		common := fmt.Sprintf("request=smtpd_access_policy\nprotocol_name=ESMTP\nclient_address=192.0.2.%d\nsasl_username=%s\nsender=%s\ninstance=%x.%x.%x\n",
			1+id, sender, sender, id, i, time.Now().UnixNano())
		for r := range rcpts + 1 {
			req.Reset()
			req.WriteString(common)
			if r < rcpts {
				fmt.Fprintf(&req, "protocol_state=RCPT\nrecipient=friend%d@elsewhere.test\nrecipient_count=0\n", r)
			} else {
				fmt.Fprintf(&req, "protocol_state=END-OF-MESSAGE\nqueue_id=Q%x%x\nrecipient_count=%d\n", id, i, rcpts)
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
