package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/consumers"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

type harness struct {
	t       *testing.T
	cfg     *config.Config
	natsURL string
	js      jetstream.JetStream
	st      *store.Store
	info    Info
	stop    func()
	path    string // config file, for reloads
}

func testConfig(t *testing.T, natsURL, prefix string) *config.Config {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.NATS.URL = natsURL
	cfg.NATS.Consumer.MaxWait = 50 * time.Millisecond
	cfg.Redis.Addrs = []string{testutil.RedisAddr()}
	cfg.Redis.Prefix = prefix
	cfg.Redis.Autostart = false
	cfg.AUP.Threshold = 5
	cfg.Notifier.EMLDir = t.TempDir()
	cfg.Policy.Postfix.Listen = "127.0.0.1:0"
	cfg.Policy.Dovecot.Listen = "127.0.0.1:0"
	three := 3
	cfg.Companies = []companies.Company{
		{ID: "acme", Name: "Acme", Domains: []string{"example.com"}, AbuseContact: "abuse@example.com", Threshold: &three},
		{ID: "globex", Domains: []string{"globex.test"}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func start(t *testing.T, cfg *config.Config) *harness {
	t.Helper()
	rdb, _ := testutil.Redis(t) // the caller's prefix is cleaned by its own Redis call
	nc := testutil.NATS(t, cfg.NATS.URL)
	js, _ := jetstream.New(nc)
	h := &harness{t: t, cfg: cfg, natsURL: cfg.NATS.URL, js: js, st: store.New(rdb, cfg.Redis.Prefix)}
	h.run()
	return h
}

func (h *harness) run() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: h.cfg, ConfigPath: h.path, OnReady: func(i Info) { ready <- i }})
	}()
	select {
	case h.info = <-ready:
	case err := <-done:
		h.t.Fatalf("aupd exited: %v", err)
	case <-time.After(30 * time.Second):
		h.t.Fatal("aupd did not start")
	}
	stopped := false
	h.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("aupd: %v", err)
		}
	}
	h.t.Cleanup(h.stop)
}

func verdict(id, dir, account, v string, at time.Time) []byte {
	return fmt.Appendf(nil, `{"id":%q,"time":%q,"direction":%q,"account":%q,"verdict":%q,"score":9.5,"source":"test",`+
		`"message":{"subject":"offer %s","from":%q,"to":["x@example.net"],"raw":"Subject: offer\r\n\r\nbody %s"}}`,
		id, at.UTC().Format(time.RFC3339Nano), dir, account, v, id, account, id)
}

func (h *harness) publish(subject string, data []byte, msgID string) {
	h.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	if msgID != "" {
		m.Header.Set(nats.MsgIdHdr, msgID)
	}
	if _, err := h.js.PublishMsg(context.Background(), m); err != nil {
		h.t.Fatalf("publish %s: %v", subject, err)
	}
}

// drained waits until the verdict consumer has nothing pending or
// unacknowledged.
func (h *harness) drained() {
	h.t.Helper()
	h.drainedWithin(30 * time.Second)
}

// drainedWithin is drained with a timeout of its own, for a large backlog.
func (h *harness) drainedWithin(timeout time.Duration) {
	h.t.Helper()
	testutil.Eventually(h.t, timeout, func() bool {
		ctx := context.Background()
		st, err := h.js.Stream(ctx, h.cfg.NATS.Verdicts.Name)
		if err != nil {
			return false
		}
		sinfo, err := st.Info(ctx)
		if err != nil {
			return false
		}
		c, err := h.js.Consumer(ctx, h.cfg.NATS.Verdicts.Name, h.cfg.NATS.Consumer.Durable)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		// The consumer learns of a new message a moment after the stream
		// stored it, so pending counts alone can read 0 too early: the
		// ack floor must also have reached the stream's last message.
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= sinfo.State.LastSeq
	}, "consumer did not drain")
}

func (h *harness) count(account string) int {
	h.t.Helper()
	rdb, _ := testutil.Redis(h.t)
	n, err := store.WindowLen(context.Background(), rdb, h.cfg.Redis.Prefix, account)
	if err != nil {
		h.t.Fatal(err)
	}
	return int(n)
}

// streamMsgs returns every message of a stream.
func (h *harness) streamMsgs(stream string) []*jetstream.RawStreamMsg {
	h.t.Helper()
	ctx := context.Background()
	s, err := h.js.Stream(ctx, stream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err == nil {
			out = append(out, m)
		}
	}
	return out
}

func (h *harness) metrics() string {
	h.t.Helper()
	resp, err := http.Get("http://" + h.info.HTTPAddr + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestEndToEnd runs against the in-process NATS server (the current
// release) and against the machine's Debian nats-server 2.9.10, which aupd
// must keep working with.
func TestEndToEnd(t *testing.T) {
	testutil.BothNATS(t, endToEnd)
}

func endToEnd(t *testing.T, natsURL string) {
	_, prefix := testutil.Redis(t)
	h := start(t, testConfig(t, natsURL, prefix))
	now := time.Now()

	// alice@example.com (acme, threshold 3): 4 spam, each published twice
	// without a JetStream message id, so only aupd's own dedup stops the
	// copies; plus ham that must not count.
	for i := range 4 {
		id := fmt.Sprintf("alice-%d", i)
		data := verdict(id, "outbound", "Alice@Example.COM", "spam", now.Add(-time.Duration(i)*time.Minute))
		h.publish("aup.verdict.outbound", data, "")
		h.publish("aup.verdict.outbound", data, "")
	}
	h.publish("aup.verdict.outbound", verdict("alice-ham", "outbound", "alice@example.com", "ham", now), "")
	// bob@example.com: exactly the threshold, not over it.
	for i := range 3 {
		h.publish("aup.verdict.complaint", verdict(fmt.Sprint("bob-", i), "complaint", "bob@example.com", "phish", now), "")
	}
	// carol@globex.test (provider default 5): 6 inbound local-to-local.
	for i := range 6 {
		h.publish("aup.verdict.inbound", verdict(fmt.Sprint("carol-", i), "inbound", "carol@globex.test", "virus", now), "")
	}
	// Inbound for an address in no company's domains: statistics only.
	for i := range 10 {
		h.publish("aup.verdict.inbound", verdict(fmt.Sprint("ext-", i), "inbound", "someone@elsewhere.org", "spam", now), "")
	}
	// An event older than the window.
	h.publish("aup.verdict.outbound", verdict("bob-old", "outbound", "bob@example.com", "spam", now.Add(-25*time.Hour)), "")
	// Invalid input.
	bad := map[string][]byte{
		"invalid_json":       []byte(`{"id": "x",`),
		"missing_field":      []byte(`{"id":"m1","direction":"outbound","account":"a@example.com","verdict":"spam"}`),
		"direction_mismatch": verdict("dm", "inbound", "alice@example.com", "spam", now),
		"invalid_field":      []byte(`{"id":"f1","time":"yesterday","direction":"outbound","account":"a@example.com","verdict":"spam"}`),
	}
	for _, data := range bad {
		h.publish("aup.verdict.outbound", data, "")
	}
	h.publish("aup.verdict.sideways", verdict("sw", "outbound", "alice@example.com", "spam", now), "")
	h.drained()

	if n := h.count("alice@example.com"); n != 4 {
		t.Errorf("alice counts %d, want 4", n)
	}
	if n := h.count("bob@example.com"); n != 3 {
		t.Errorf("bob counts %d, want 3", n)
	}
	if n := h.count("carol@globex.test"); n != 6 {
		t.Errorf("carol counts %d, want 6", n)
	}
	ctx := context.Background()
	for account, want := range map[string]bool{"alice@example.com": true, "bob@example.com": false, "carol@globex.test": true, "someone@elsewhere.org": false} {
		a, err := h.st.Account(ctx, account)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.AUP != ""; got != want {
			t.Errorf("%s suspended=%v, want %v (suspensions %v)", account, got, want, a.Suspended())
		}
		if account == "someone@elsewhere.org" && a.Exists {
			t.Errorf("an external account got state in Redis")
		}
	}

	// Exactly one account event per suspension, with the record.
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.streamMsgs(h.cfg.NATS.Accounts.Name)) >= 2 }, "account events")
	var suspended []string
	for _, m := range h.streamMsgs(h.cfg.NATS.Accounts.Name) {
		var ev events.AccountEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if m.Subject != "aup.account.suspended" || ev.Type != "suspended" || ev.Reason != "aup_violation" || ev.Suspension == nil {
			t.Fatalf("unexpected account event on %s: %s", m.Subject, m.Data)
		}
		if m.Header.Get(nats.MsgIdHdr) != ev.ID {
			t.Errorf("account event published without its id as Nats-Msg-Id")
		}
		if strings.Join(ev.New.Suspended, ",") != "send,webmail_send" || len(ev.Old.Suspended) != 0 {
			t.Errorf("state change %+v -> %+v", ev.Old, ev.New)
		}
		if ev.Account == "alice@example.com" && (ev.Suspension.Threshold != 3 || ev.Suspension.Count != 4 || ev.Suspension.Counts["outbound"] != 4 || len(ev.Suspension.Samples) != 3) {
			t.Errorf("alice's suspension record %+v", ev.Suspension)
		}
		suspended = append(suspended, ev.Account)
	}
	if strings.Join(suspended, " ") != "alice@example.com carol@globex.test" && strings.Join(suspended, " ") != "carol@globex.test alice@example.com" {
		t.Errorf("suspension events for %v, want alice and carol once each", suspended)
	}

	// Dead letters: the original payload and a machine-readable reason.
	reasons := map[string]int{}
	for _, m := range h.streamMsgs(h.cfg.NATS.Dead.Name) {
		r := m.Header.Get(consumers.HeaderReason)
		reasons[r]++
		if want, ok := bad[r]; ok && string(m.Data) != string(want) {
			t.Errorf("dead letter %s carries %q, want the original payload", r, m.Data)
		}
	}
	want := map[string]int{"invalid_json": 1, "missing_field": 1, "direction_mismatch": 1, "invalid_field": 1, "unknown_subject": 1}
	if fmt.Sprint(reasons) != fmt.Sprint(want) {
		t.Errorf("dead letters %v, want %v", reasons, want)
	}
	met := h.metrics()
	for _, line := range []string{
		`aupd_dead_letters_total{reason="missing_field"} 1`,
		`aupd_events_total{direction="inbound",outcome="external",verdict="spam"} 10`,
		`aupd_events_total{direction="outbound",outcome="duplicate",verdict="spam"} 4`,
		`aupd_events_total{direction="outbound",outcome="stats",verdict="ham"} 1`,
		`aupd_events_total{direction="outbound",outcome="late",verdict="spam"} 1`,
		`aupd_suspensions_total{action="suspend",rule="spam_count"} 2`,
	} {
		if !strings.Contains(met, line) {
			t.Errorf("metrics lack %s", line)
		}
	}

	// Statistics-only events reach the account's hourly statistics
	// without a batch of their own: the worker writes them once a second
	// and when the consumer is idle.
	hamField := fmt.Sprintf("%d.%d", rules.KindOf(rules.Outbound, rules.Ham), now.UnixMilli()/3600000)
	hams := func() string {
		rdb, _ := testutil.Redis(t)
		v, _ := rdb.HGet(context.Background(), store.AccountKey(h.cfg.Redis.Prefix, "alice@example.com", "t"), hamField).Result()
		return v
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return hams() == "1" }, "alice's ham in her statistics")

	// A restart resumes where it stopped and counts nothing twice; a stop
	// writes the statistics it holds.
	h.publish("aup.verdict.outbound", verdict("alice-ham-2", "outbound", "alice@example.com", "ham", now), "")
	h.drained()
	h.stop()
	if v := hams(); v != "2" {
		t.Errorf("alice's ham statistics after a stop: %q, want 2", v)
	}
	h.run()
	h.publish("aup.verdict.outbound", verdict("bob-new", "outbound", "bob@example.com", "spam", time.Now()), "")
	h.drained()
	if n := h.count("bob@example.com"); n != 4 {
		t.Errorf("bob after restart counts %d, want 4", n)
	}
	if n := h.count("alice@example.com"); n != 4 {
		t.Errorf("alice after restart counts %d, want 4", n)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.streamMsgs(h.cfg.NATS.Accounts.Name)) == 3 }, "bob's suspension event after restart")
}

func TestReadyz(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	h := start(t, testConfig(t, ns.ClientURL(), prefix))
	resp, err := http.Get("http://" + h.info.HTTPAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz %d with NATS and Redis up", resp.StatusCode)
	}
	ns.Shutdown()
	testutil.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + h.info.HTTPAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, "readyz still ready with NATS down")
}

// TestReloadChangesRuleAndCompanies: a changed threshold and a new company
// in the config file take effect on POST /-/reload, without a restart.
func TestReloadChangesRuleAndCompanies(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	dir := t.TempDir()
	path := dir + "/aupd.yml"
	write := func(threshold int, extra string) {
		text := fmt.Sprintf(`data_dir: %s
http: {listen: "127.0.0.1:0"}
nats: {url: %s, consumer: {max_wait: 50ms}}
redis: {addrs: [%q], prefix: %s, autostart: false}
notifier: {eml_dir: %s}
policy: {postfix: {listen: ""}, dovecot: {listen: ""}}
auth: {tokens: [{name: reloader, role: admin, hash: "sha256:4beb01f113e34f34a7ae5e744f55b4d4b991fd121443e62226682880641a2b56"}]}
aup: {threshold: %d}
companies:
  - {id: acme, domains: [example.com]}
%s`, dir, ns.ClientURL(), testutil.RedisAddr(), prefix, dir+"/notices", threshold, extra)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(10, "")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	rdb, _ := testutil.Redis(t)
	nc := testutil.NATS(t, cfg.NATS.URL)
	js, _ := jetstream.New(nc)
	h := &harness{t: t, cfg: cfg, js: js, st: store.New(rdb, prefix), path: path}
	h.run()
	now := time.Now()
	for i := range 3 {
		h.publish("aup.verdict.inbound", verdict(fmt.Sprint("r", i), "inbound", "erin@initech.test", "spam", now), "")
		h.publish("aup.verdict.outbound", verdict(fmt.Sprint("o", i), "outbound", "frank@example.com", "spam", now), "")
	}
	h.drained()
	if n := h.count("erin@initech.test"); n != 0 {
		t.Fatalf("inbound for an unknown domain counted %d", n)
	}
	write(2, "  - {id: initech, domains: [initech.test]}\n")
	// Reloading needs an admin token.
	resp, err := http.Post("http://"+h.info.HTTPAddr+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("reload without a token answered %d; want 401", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+h.info.HTTPAddr+"/-/reload", nil)
	req.Header.Set("Authorization", "Bearer reload-test-token")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reload answered %d", resp.StatusCode)
	}
	for i := 3; i < 6; i++ {
		h.publish("aup.verdict.inbound", verdict(fmt.Sprint("r", i), "inbound", "erin@initech.test", "spam", now), "")
	}
	h.publish("aup.verdict.outbound", verdict("o3", "outbound", "frank@example.com", "spam", now), "")
	h.drained()
	if n := h.count("erin@initech.test"); n != 3 {
		t.Errorf("after reload erin counts %d, want 3 (initech is now a company)", n)
	}
	for _, acct := range []string{"erin@initech.test", "frank@example.com"} {
		a, err := h.st.Account(context.Background(), acct)
		if err != nil || a.AUP == "" {
			t.Errorf("%s not suspended under the reloaded threshold 2: %v", acct, err)
		}
	}
}
