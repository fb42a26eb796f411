package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/cluster"
	"github.com/aupd/aupd/internal/testutil"
)

// TestReadinessOnClusterFaults runs aupd in-process on the loopback
// cluster (3 NATS nodes with streams at 3 replicas, a Redis Cluster of 3
// masters with a replica each) and takes away what /readyz and aupd_ready
// used to stay green through:
//
//   - JetStream without quorum (2 of the 3 NATS nodes killed): /readyz
//     answers 503 within a few seconds and names jetstream, while the NATS
//     connection itself is fine; aupd_consumer_lag stays exported; it is
//     ready again once the nodes are back.
//   - A Redis shard fully down (its master and replica killed): with
//     Redis's default cluster-require-full-coverage yes every master
//     refuses writes (CLUSTERDOWN) and /readyz answers 503; with it set to
//     no the other shards take writes and /readyz answers 200, degraded,
//     naming the shard, and the metrics say which master and how many
//     slots. Ready again once the shard is back.
//
// Each loss is logged once when it starts and once when it ends.
func TestReadinessOnClusterFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("brings up 3 NATS nodes and 6 Redis nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // it may wait its turn on the cluster lock
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{Dir: t.TempDir(), AupdProcesses: 1, NoAupdStart: true, AupdBinary: "/bin/false"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := testConfig(t, c.NATSURLs(), "aupt"+testutil.RandomHex(4))
	cfg.Redis.Addrs = c.RedisAddrs()
	cfg.NATS.Verdicts.Replicas, cfg.NATS.Accounts.Replicas, cfg.NATS.Dead.Replicas = 3, 3, 3
	cfg.Policy.Postfix.Listen, cfg.Policy.Dovecot.Listen = "", ""
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	t.Cleanup(func() { dumpOnFailure(t, &logs) })
	reg := prometheus.NewRegistry()
	info := runChecked(t, Options{Config: cfg, Registry: reg, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	// waitReadyz polls /readyz until cond holds, and returns that answer.
	waitReadyz := func(within time.Duration, what string, cond func(readyzAnswer) bool) readyzAnswer {
		t.Helper()
		start := time.Now()
		var a readyzAnswer
		last := ""
		testutil.Eventually(t, within, func() bool {
			a = askReadyz(t, info.HTTPAddr)
			if s := fmt.Sprint(a.code, a.checks); s != last {
				t.Logf("%s: readyz %s", time.Since(start).Round(time.Millisecond), s)
				last = s
			}
			return cond(a)
		}, "%s", what)
		t.Logf("%s after %s: %d %v", what, time.Since(start).Round(time.Millisecond), a.code, a.checks)
		return a
	}
	if a := askReadyz(t, info.HTTPAddr); a.code != http.StatusOK || a.checks["status"] != "ok" || a.checks["redis_cluster"] != "ok" {
		t.Fatalf("readyz on a healthy cluster: %d %v", a.code, a.checks)
	}

	t.Run("jetstream without quorum", func(t *testing.T) {
		// The two nodes that do not lead the verdict consumer go: its
		// leader goes on answering the consumer's info until raft's
		// lost-quorum check steps it down, 10 to 20 s later.
		leader := consumerLeader(ctx, t, c, cfg.NATS.Verdicts.Name, cfg.NATS.Consumer.Durable)
		var down []*cluster.NATSNode
		for _, n := range c.NATS {
			if n != leader {
				down = append(down, n)
				if err := n.Kill(); err != nil {
					t.Fatal(err)
				}
			}
		}
		a := waitReadyz(9*time.Second, "503 naming jetstream", func(a readyzAnswer) bool {
			return a.code == http.StatusServiceUnavailable && a.checks["jetstream"] != "ok" && a.checks["nats"] == "ok"
		})
		if !strings.Contains(a.checks["jetstream"], "no quorum") {
			t.Errorf("jetstream says %q; want no quorum, from the leader that still answers", a.checks["jetstream"])
		}
		if v, ok := gaugeOf(t, reg, "aupd_component_up", "component", "jetstream"); !ok || v != 0 {
			t.Errorf("aupd_component_up{component=jetstream} = %v (present %v), want 0", v, ok)
		}
		if _, ok := gaugeOf(t, reg, "aupd_consumer_lag", "kind", "pending"); !ok {
			t.Error("aupd_consumer_lag vanished while JetStream has no quorum")
		}
		if n := logCount(logs.String(), "read state gauge", "gauge", "notices_pending"); n != 0 {
			t.Errorf("a scrape asked JetStream for the notices' consumer and logged its failure %d times; the readiness checks had said it was out", n)
		}
		for _, n := range down {
			if err := n.Start(); err != nil {
				t.Fatal(err)
			}
		}
		waitReadyz(90*time.Second, "ready after the nodes returned", func(a readyzAnswer) bool { return a.code == http.StatusOK })
		if f, p := logCount(logs.String(), "readiness check failing", "check", "jetstream"), logCount(logs.String(), "readiness check passes again", "check", "jetstream"); f != 1 || p != 1 {
			t.Errorf("JetStream's loss logged %d times and its end %d times, want once each", f, p)
		}
	})

	t.Run("a redis shard fully down", func(t *testing.T) {
		master, replica := c.Redis[0], c.Redis[3] // formed so; no failover has happened
		if m, err := c.MasterOf(ctx, 0); err != nil || m != master {
			t.Fatalf("master of slot 0 is %v (%v), want %s", m, err, master.Name)
		}
		const shardSlots = 16384 / 3 // slots 0-5460
		check := shardCheck + master.Addr()
		setCoverage := func(v string) {
			t.Helper()
			for _, n := range c.Redis {
				if n.Running() {
					if _, err := n.Do(ctx, "CONFIG", "SET", "cluster-require-full-coverage", v); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		setCoverage("yes") // Redis's default (the harness runs with no)
		if err := replica.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := master.Kill(); err != nil {
			t.Fatal(err)
		}
		// Redis's default: the whole cluster refuses writes.
		waitReadyz(30*time.Second, "503 with the cluster down", func(a readyzAnswer) bool {
			return a.code == http.StatusServiceUnavailable && a.checks["redis"] != "ok" &&
				strings.Contains(a.checks["redis_cluster"], "cluster_state fail") && a.checks[check] != "ok"
		})
		// cluster-require-full-coverage no: the other shards go on.
		setCoverage("no")
		a := waitReadyz(30*time.Second, "200 degraded naming the shard", func(a readyzAnswer) bool {
			return a.code == http.StatusOK && a.checks["status"] == "degraded" && a.checks["redis"] == "ok" && a.checks[check] != "ok"
		})
		if !strings.Contains(a.checks["redis_cluster"], "5461 of 16384 slots not served") || !strings.Contains(a.checks["redis_cluster"], master.Addr()) {
			t.Errorf("redis_cluster says %q; want the slots not served and the master", a.checks["redis_cluster"])
		}
		for _, n := range c.Redis[1:3] {
			if v := a.checks[shardCheck+n.Addr()]; v != "ok" {
				t.Errorf("%s (%s) says %q, want ok", n.Name, n.Addr(), v)
			}
		}
		for _, g := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"aupd_ready", nil, 1},
			{"aupd_component_up", []string{"component", "redis"}, 1},
			{"aupd_component_up", []string{"component", "redis_cluster"}, 0},
			{"aupd_redis_shard_up", []string{"master", master.Addr()}, 0},
			{"aupd_redis_shard_up", []string{"master", c.Redis[1].Addr()}, 1},
			{"aupd_redis_slots_unserved", nil, shardSlots},
		} {
			if v, ok := gaugeOf(t, reg, g.name, g.labels...); !ok || v != g.want {
				t.Errorf("%s%v = %v (present %v), want %v", g.name, g.labels, v, ok, g.want)
			}
		}

		for _, n := range []*cluster.RedisNode{master, replica} {
			if err := n.Start(); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.WaitRedisOK(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		waitReadyz(30*time.Second, "ready again with the shard back", func(a readyzAnswer) bool {
			return a.code == http.StatusOK && a.checks["status"] == "ok"
		})
		if f, p := logCount(logs.String(), "readiness check failing", "check", check), logCount(logs.String(), "readiness check passes again", "check", check); f != 1 || p != 1 {
			t.Errorf("the shard's loss logged %d times and its end %d times, want once each", f, p)
		}
	})
}

// consumerLeader is the NATS node that leads the consumer now.
func consumerLeader(ctx context.Context, t *testing.T, c *cluster.Cluster, stream, durable string) *cluster.NATSNode {
	t.Helper()
	nc, err := c.ConnectNATS("readiness-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, stream, durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("consumer %s is not replicated on 3 nodes: %+v", durable, info.Cluster)
	}
	n := c.NATSNodeNamed(info.Cluster.Leader)
	if n == nil {
		t.Fatalf("consumer %s led by %q, no node of the cluster", durable, info.Cluster.Leader)
	}
	return n
}
