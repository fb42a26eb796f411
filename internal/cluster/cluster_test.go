package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterUpFaultsDown brings the whole cluster up, drives one account
// over its threshold and reads the notice at the sink, then uses every
// fault handle once: the verdict stream's leader killed and restarted, a
// Redis master failed over and back, an aupd stopped and continued, killed
// and restarted, and the sink taken down and up.
func TestClusterUpFaultsDown(t *testing.T) {
	if testing.Short() {
		t.Skip("brings up 3 NATS nodes, 6 Redis nodes and 2 aupd processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Dir: t.TempDir(), Aupd: AupdSettings{Threshold: 5, NoticeRetryMin: 200 * time.Millisecond, NoticeRetryMax: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nc, err := c.ConnectNATS("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(account string, n int, tag string) {
		t.Helper()
		for i := range n {
			id := fmt.Sprintf("%s-%d", tag, i)
			ev := fmt.Sprintf(`{"id":%q,"time":%q,"direction":"outbound","account":%q,"verdict":"spam","message":{"subject":"s%d","raw":"Subject: s%d\r\n\r\nx\r\n"}}`,
				id, time.Now().UTC().Format(time.RFC3339Nano), account, i, i)
			if _, err := js.Publish(ctx, "aup.verdict.outbound", []byte(ev), jetstream.WithMsgID(id)); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitNotices := func(n int) []Notice {
		t.Helper()
		if err := poll(ctx, time.Minute, 50*time.Millisecond, func(context.Context) (bool, error) { return c.SMTP.Count() >= n, nil }); err != nil {
			t.Fatalf("%d notices, want %d: %v", c.SMTP.Count(), n, err)
		}
		return c.SMTP.Notices()
	}
	publish("alice@example.com", 6, "a")
	ns := waitNotices(1)
	if n := ns[0]; n.Account != "alice@example.com" || n.Suspension == "" || !strings.HasPrefix(n.MessageID, "<aup.") || n.ParseErr != "" {
		t.Fatalf("notice %+v", n)
	}

	// The verdict stream's leader dies; another takes over; it rejoins.
	leader, err := c.StreamLeader(ctx, js, "AUP_VERDICTS")
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitStreamLeader(ctx, js, "AUP_VERDICTS", leader, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	if err := leader.WaitHealthy(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitStreamCurrent(ctx, js, "AUP_VERDICTS", time.Minute); err != nil {
		t.Fatal(err)
	}

	// bob's master fails over and comes back as a replica.
	slot := SlotOf("aup:{bob@example.com}:w")
	f, err := c.FailoverMaster(ctx, slot, 0)
	if err != nil {
		t.Fatal(err)
	}
	if f.New == nil || f.New == f.Old {
		t.Fatalf("failover %+v", f)
	}
	if m, err := c.MasterOf(ctx, slot); err != nil || m != f.New {
		t.Fatalf("master of %d is %v (%v), want %s", slot, m, err, f.New.Name)
	}
	t.Logf("failover %s -> %s: promoted after %s, rejoined after %s", f.Old.Name, f.New.Name, f.Promoted, f.Rejoined)

	// aupd stopped, continued, killed and restarted; the sink down while
	// bob crosses, then up: his notice arrives after all.
	a := c.Aupd[0]
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := a.Cont(); err != nil {
		t.Fatal(err)
	}
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	if a.Running() {
		t.Fatal("killed aupd still runs")
	}
	if err := c.SMTP.Down(); err != nil {
		t.Fatal(err)
	}
	publish("bob@example.com", 6, "b")
	if err := a.StartReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the notifier tries and fails meanwhile
	if n := c.SMTP.Count(); n != 1 {
		t.Fatalf("the sink was down but has %d notices", n)
	}
	if err := c.SMTP.Up(); err != nil {
		t.Fatal(err)
	}
	ns = waitNotices(2)
	if n := ns[1]; n.Account != "bob@example.com" || n.Suspension == "" || n.Suspension == ns[0].Suspension {
		t.Fatalf("second notice %+v", n)
	}
}
