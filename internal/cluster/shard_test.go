package cluster

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/store"
)

// shardRig is what the shard failure test drives: the cluster, a Redis
// client, the verdict stream and aupd's consumer of it.
type shardRig struct {
	t    *testing.T
	ctx  context.Context
	c    *Cluster
	rdb  *redis.ClusterClient
	js   jetstream.JetStream
	cons jetstream.Consumer
}

// perEvent events for each account: with threshold 3 every account
// crosses once, so exactly one notice each shows nothing was doubled.
const perEvent = 4

// accounts makes accounts named after tag, at least n on every master,
// and returns those of the master serving victim's slot apart.
func (r *shardRig) accounts(tag string, n int) (victim, others []string) {
	r.t.Helper()
	per := map[*RedisNode]int{}
	var first *RedisNode
	for i := 0; len(per) < 3 || slices.ContainsFunc(mapValues(per), func(k int) bool { return k < n }); i++ {
		a := fmt.Sprintf("%s-%d@example.com", tag, i)
		m, err := r.c.MasterOf(r.ctx, SlotOf("aup:{"+a+"}:w"))
		if err != nil {
			r.t.Fatal(err)
		}
		if first == nil {
			first = m
		}
		if per[m] >= n {
			continue
		}
		per[m]++
		if m == first {
			victim = append(victim, a)
		} else {
			others = append(others, a)
		}
	}
	return victim, others
}

// on is the rig for a subtest.
func (r shardRig) on(t *testing.T) *shardRig {
	r.t = t
	return &r
}

func mapValues(m map[*RedisNode]int) []int {
	var out []int
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func (r *shardRig) publish(accounts []string) {
	r.t.Helper()
	for _, a := range accounts {
		for k := range perEvent {
			id := fmt.Sprintf("%s-%d", a, k)
			ev := fmt.Sprintf(`{"id":%q,"time":%q,"direction":"outbound","account":%q,"verdict":"spam","message":{"subject":"s%d","raw":"Subject: s%d\r\n\r\nx\r\n"}}`,
				id, time.Now().UTC().Format(time.RFC3339Nano), a, k, k)
			if _, err := r.js.Publish(r.ctx, "aup.verdict.outbound", []byte(ev), jetstream.WithMsgID(id)); err != nil {
				r.t.Fatal(err)
			}
		}
	}
}

// windowIs says why the account's window does not hold exactly the
// members of its events (the first 6 bytes of each id's SHA-256).
func (r *shardRig) windowIs(ctx context.Context, a string) error {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	got, err := store.WindowMembers(cctx, r.rdb, "aup", a)
	if err != nil {
		r.rdb.ReloadState(ctx) // a killed master's slots have moved
		return fmt.Errorf("%s: %w", a, err)
	}
	var want []string
	for k := range perEvent {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s-%d", a, k))
		want = append(want, string(sum[:6]))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s: window holds %d members %x, want %d %x", a, len(got), got, len(want), want)
	}
	return nil
}

// waitCounted waits until every account's window holds exactly its
// events and aupd has acknowledged all but unacked of the stream's
// events.
func (r *shardRig) waitCounted(accounts []string, unacked int, timeout time.Duration) {
	r.t.Helper()
	err := poll(r.ctx, timeout, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		for _, a := range accounts {
			if err := r.windowIs(ctx, a); err != nil {
				return false, err
			}
		}
		info, err := r.cons.Info(ctx)
		if err != nil {
			return false, err
		}
		if info.NumPending != 0 || info.NumAckPending != unacked {
			return false, fmt.Errorf("%d events undelivered and %d unacknowledged, want 0 and %d", info.NumPending, info.NumAckPending, unacked)
		}
		return true, nil
	})
	if err != nil {
		r.t.Fatalf("%d accounts not counted and acknowledged in %s: %v", len(accounts), timeout, err)
	}
}

// waitNotices waits until each of accounts has had its notice, and
// checks that no account had two and that none of held had one.
func (r *shardRig) waitNotices(accounts, held []string, timeout time.Duration) {
	r.t.Helper()
	per := func() map[string]int {
		out := map[string]int{}
		for _, n := range r.c.SMTP.Notices() {
			out[n.Account]++
		}
		return out
	}
	err := poll(r.ctx, timeout, 100*time.Millisecond, func(context.Context) (bool, error) {
		got := per()
		for _, a := range accounts {
			if got[a] == 0 {
				return false, fmt.Errorf("no notice for %s", a)
			}
		}
		return true, nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	for a, n := range per() {
		if n > 1 {
			r.t.Errorf("%s: %d notices, want 1", a, n)
		}
		if slices.Contains(held, a) {
			r.t.Errorf("%s: a notice while its shard was held", a)
		}
	}
}

func (r *shardRig) scrape() string {
	r.t.Helper()
	resp, err := http.Get("http://" + r.c.Aupd[0].HTTPAddr + "/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return string(b)
}

func (r *shardRig) logCount(line string) int {
	b, err := os.ReadFile(r.c.Aupd[0].Log)
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.Count(string(b), line)
}

// TestAShardFailsAlone: with redis.wait_replicas 1, a Redis master killed
// and its replica promoted with the old master kept down (so the new one
// has no replica and its WAIT fails), then a shard fully down (master and
// replica), then the first again under replica_loss: accept. Each time
// events for accounts on every shard arrive: the other shards' accounts
// are counted and acknowledged within seconds while the failed shard's
// wait in JetStream, and are counted once when it is back (or, under
// accept, after replica_loss_after). Windows are compared member by
// member; one notice per account shows no crossing was decided twice.
func TestAShardFailsAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("brings up 3 NATS nodes, 6 Redis nodes and an aupd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Dir: t.TempDir(), AupdProcesses: 1, Aupd: AupdSettings{
		// ack_wait 5s: Debian's nats-server 2.9.10 now and then loses the
		// redelivery of a delayed NAK in a cluster (seen here: one event
		// of about forty, after a master's kill), and the event comes back
		// only after ack_wait; the default 30s would be this test's
		// whole budget.
		AckWait:   5 * time.Second,
		Threshold: 3, WaitReplicas: 1, Batch: 100, RetryMin: 200 * time.Millisecond, RetryMax: 2 * time.Second,
		NoticeRetryMin: 200 * time.Millisecond, NoticeRetryMax: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nc, err := c.ConnectNATS("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r := &shardRig{t: t, ctx: ctx, c: c, rdb: c.NewRedisClient()}
	defer r.rdb.Close()
	if r.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if r.cons, err = r.js.Consumer(ctx, "AUP_VERDICTS", "aupd-worker"); err != nil {
		t.Fatal(err)
	}

	t.Run("master lost with no replica, hold", func(t *testing.T) {
		r := r.on(t)
		victim, others := r.accounts("hold", 4)
		f, err := c.KillMaster(ctx, SlotOf("aup:{"+victim[0]+"}:w"))
		if err != nil {
			t.Fatal(err)
		}
		r.publish(append(slices.Clone(victim), others...))
		r.waitCounted(others, len(victim)*perEvent, 20*time.Second)
		r.waitNotices(others, victim, 20*time.Second)
		gauge := fmt.Sprintf(`aupd_redis_unreplicated{master="%s"} 1`, f.New.Addr())
		if m := r.scrape(); !strings.Contains(m, gauge) {
			t.Errorf("metrics lack %s", gauge)
		}
		// Still held: nothing of the victim's shard was acknowledged
		// meanwhile (the notices took their time).
		if info, err := r.cons.Info(ctx); err != nil || info.NumAckPending != len(victim)*perEvent {
			t.Fatalf("held shard: %d unacknowledged (%v), want %d", info.NumAckPending, err, len(victim)*perEvent)
		}
		if err := c.Rejoin(ctx, f.Old); err != nil {
			t.Fatal(err)
		}
		r.waitCounted(append(slices.Clone(victim), others...), 0, 30*time.Second)
		r.waitNotices(append(slices.Clone(victim), others...), nil, 30*time.Second)
		if n := r.logCount("redis master's writes are not on enough replicas"); n != 1 {
			t.Errorf("the start of the short waits logged %d times, want once", n)
		}
		if n := r.logCount("redis master's writes are on enough replicas again"); n != 1 {
			t.Errorf("their end logged %d times, want once", n)
		}
	})

	t.Run("shard fully down", func(t *testing.T) {
		r := r.on(t)
		victim, others := r.accounts("down", 4)
		nodes, err := c.StopShard(ctx, SlotOf("aup:{"+victim[0]+"}:w"))
		if err != nil {
			t.Fatal(err)
		}
		r.publish(append(slices.Clone(victim), others...))
		r.waitCounted(others, len(victim)*perEvent, 20*time.Second)
		r.waitNotices(others, victim, 20*time.Second)
		if err := c.StartShard(ctx, nodes); err != nil {
			t.Fatal(err)
		}
		r.waitCounted(append(slices.Clone(victim), others...), 0, 30*time.Second)
		r.waitNotices(append(slices.Clone(victim), others...), nil, 30*time.Second)
	})

	t.Run("master lost with no replica, accept", func(t *testing.T) {
		r := r.on(t)
		err := c.ReconfigureAupd(ctx, func(s *AupdSettings) {
			s.RedisExtra = []string{"replica_loss: accept", "replica_loss_after: 3s"}
		})
		if err != nil {
			t.Fatal(err)
		}
		victim, others := r.accounts("accept", 4)
		late := victim[len(victim)-1] // written after the old master is back
		victim = victim[:len(victim)-1]
		ended := r.logCount("redis master's writes are on enough replicas again")
		f, err := c.KillMaster(ctx, SlotOf("aup:{"+victim[0]+"}:w"))
		if err != nil {
			t.Fatal(err)
		}
		r.publish(append(slices.Clone(victim), others...))
		// Every account, the victim's after replica_loss_after, with the
		// old master still down.
		r.waitCounted(append(slices.Clone(victim), others...), 0, 30*time.Second)
		r.waitNotices(append(slices.Clone(victim), others...), nil, 30*time.Second)
		if n := r.logCount("acknowledging a redis master's writes without replicas"); n != 1 {
			t.Errorf("accepting logged %d times, want once", n)
		}
		gauge := fmt.Sprintf(`aupd_redis_unreplicated_accepted{master="%s"} 1`, f.New.Addr())
		if m := r.scrape(); !strings.Contains(m, gauge) {
			t.Errorf("metrics lack %s", gauge)
		}
		if err := c.Rejoin(ctx, f.Old); err != nil {
			t.Fatal(err)
		}
		// The end shows with the next wait on that master.
		r.publish([]string{late})
		err = poll(ctx, 30*time.Second, 100*time.Millisecond, func(context.Context) (bool, error) {
			return r.logCount("redis master's writes are on enough replicas again") == ended+1, nil
		})
		if err != nil {
			t.Errorf("the end of the accepted run was not logged once: %v", err)
		}
		r.waitCounted(append(victim, late), 0, 30*time.Second)
	})
}
