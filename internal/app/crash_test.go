package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// buildAupd builds the aupd command once per test binary run.
func buildAupd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "aupd")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/aupd")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build aupd: %v\n%s", err, out)
	}
	return bin
}

// TestCrashLosesNothingCountsNothingTwice SIGKILLs aupd twice in the middle
// of a large backlog, restarts it, and checks that every account's count is
// exact and every account was suspended with exactly one account event.
func TestCrashLosesNothingCountsNothingTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the aupd binary")
	}
	bin := buildAupd(t)
	ns := testutil.NATSServer(t, "")
	rdb, prefix := testutil.Redis(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "aupd.yml")
	cfgText := fmt.Sprintf(`data_dir: %s
http: {listen: "127.0.0.1:0"}
nats:
  url: %s
  consumer: {batch: 200, max_wait: 50ms, ack_wait: 5s}
redis: {addrs: [%q], prefix: %s, autostart: false}
aup: {threshold: 50, max_tracked: 1000}
notifier: {eml_dir: %s}
policy: {postfix: {listen: ""}, dovecot: {listen: ""}}
companies:
  - {id: acme, domains: [example.com], abuse_contact: abuse@example.com}
`, dir, ns.ClientURL(), testutil.RedisAddr(), prefix, filepath.Join(dir, "notices"))
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}

	nc := testutil.NATS(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	const accounts, perAccount, dups = 500, 60, 4000
	// The stream must exist before publishing; the first aupd run creates
	// it, so create it the same way here.
	cfg := testConfig(t, ns.ClientURL(), prefix)
	if _, err := EnsureStream(ctx, js, cfg.NATS.Verdicts, verdictSubjects); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var futures []jetstream.PubAckFuture
	publish := func(data []byte) {
		// a busy machine may keep 4000 acks pending past the default
		// 200 ms stall wait; waiting longer is not what this test is about
		f, err := js.PublishAsync("aup.verdict.outbound", data, jetstream.WithStallWait(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	for i := range perAccount {
		for a := range accounts {
			publish(verdict(fmt.Sprintf("e-%d-%d", a, i), "outbound", fmt.Sprintf("user%d@example.com", a), "spam", now.Add(-time.Duration(i)*time.Second)))
		}
	}
	for d := range dups { // redeliveries from publishers that retried
		a, i := d%accounts, d%perAccount
		publish(verdict(fmt.Sprintf("e-%d-%d", a, i), "outbound", fmt.Sprintf("user%d@example.com", a), "spam", now.Add(-time.Duration(i)*time.Second)))
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		t.Fatal("publish did not complete")
	}
	for _, f := range futures {
		select {
		case err := <-f.Err():
			t.Fatal(err)
		default:
		}
	}
	total := uint64(accounts*perAccount + dups)

	// progress is how far into the stream deliveries have gone. (The ack
	// floor is no measure: after a kill it stalls until the unacked
	// batches are redelivered, ack_wait later.)
	progress := func() uint64 {
		c, err := js.Consumer(ctx, cfg.NATS.Verdicts.Name, cfg.NATS.Consumer.Durable)
		if err != nil {
			return 0
		}
		info, err := c.Info(ctx)
		if err != nil {
			return 0
		}
		return info.Delivered.Stream
	}
	ackFloor := func() uint64 {
		c, err := js.Consumer(ctx, cfg.NATS.Verdicts.Name, cfg.NATS.Consumer.Durable)
		if err != nil {
			return 0
		}
		info, err := c.Info(ctx)
		if err != nil {
			return 0
		}
		return info.AckFloor.Stream
	}
	// startAupd starts aupd and returns once it is running (its signal
	// handlers are installed).
	startAupd := func() *exec.Cmd {
		cmd := exec.Command(bin, "-config", cfgPath)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		running := make(chan struct{})
		go func() { // keep the pipe drained; show errors
			s := bufio.NewScanner(stderr)
			for s.Scan() {
				line := s.Text()
				if strings.Contains(line, "aupd running") {
					close(running)
				}
				if strings.Contains(line, "level=ERROR") {
					t.Log(line)
				}
			}
		}()
		select {
		case <-running:
		case <-time.After(30 * time.Second):
			t.Fatal("aupd did not start")
		}
		return cmd
	}
	// Kill it twice, each time as soon as it has made some progress into
	// the backlog, so that batches are in flight at the kill.
	for range 2 {
		from := progress()
		cmd := startAupd()
		testutil.Eventually(t, 60*time.Second, func() bool { return progress() >= from+total/5 }, "aupd made no progress")
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		t.Logf("killed aupd with deliveries at %d and the ack floor at %d of %d", progress(), ackFloor(), total)
	}
	if ackFloor() >= total {
		t.Fatalf("the backlog was done before the second kill; make it larger")
	}
	cmd := startAupd()
	testutil.Eventually(t, 120*time.Second, func() bool {
		c, err := js.Consumer(ctx, cfg.NATS.Verdicts.Name, cfg.NATS.Consumer.Durable)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "backlog not drained after restart")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("aupd after SIGTERM: %v", err)
	}

	st := store.New(rdb, prefix)
	for a := range accounts {
		account := fmt.Sprintf("user%d@example.com", a)
		n, err := store.WindowLen(ctx, rdb, prefix, account)
		if err != nil {
			t.Fatal(err)
		}
		if n != perAccount {
			t.Errorf("%s counts %d, want exactly %d", account, n, perAccount)
		}
		acct, err := st.Account(ctx, account)
		if err != nil || acct.AUP == "" {
			t.Errorf("%s not suspended: %v", account, err)
		}
	}
	// One suspension event per account, never two.
	s, err := js.Stream(ctx, cfg.NATS.Accounts.Name)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			break
		}
		var ev events.AccountEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		seen[ev.Account]++
	}
	if len(seen) != accounts {
		t.Errorf("%d accounts have suspension events, want %d", len(seen), accounts)
	}
	for a, n := range seen {
		if n != 1 {
			t.Errorf("%s has %d suspension events", a, n)
		}
	}
}
