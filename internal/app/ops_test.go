package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// metricValue returns the value of one sample of a scrape ("" when absent).
func metricValue(scrape, sample string) string {
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return ""
}

func TestStateGaugesFromTheStart(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	cfg := testConfig(t, ns.ClientURL(), prefix)
	h := start(t, cfg)

	// The first scrape, right after start, already has every gauge.
	m := h.metrics()
	for _, sample := range []string{
		`aupd_consumer_lag{kind="pending"}`, `aupd_consumer_lag{kind="ack_pending"}`,
		`aupd_accounts_suspended{reason="aup_violation"}`, `aupd_accounts_in_lockout`,
		`aupd_notices_pending`, `aupd_notices_failed`, `aupd_outbox_accounts`,
	} {
		if v := metricValue(m, sample); v != "0" {
			t.Errorf("first scrape: %s = %q, want 0", sample, v)
		}
	}
	if v := metricValue(m, "aupd_ready"); v != "1" {
		t.Errorf("aupd_ready = %q, want 1", v)
	}
	if !regexp.MustCompile(`(?m)^aupd_build_info\{build_date="[^"]*",goversion="go[^"]+",revision="[^"]+",version="[^"]+"\} 1$`).MatchString(m) {
		t.Error("aupd_build_info missing")
	}

	// Two suspended accounts (one by the AUP rule, one by an admin), one
	// in lockout and one whose lockout has ended.
	ctx := context.Background()
	now := time.Now()
	for i := range 4 {
		h.publish("aup.verdict.outbound", verdict(fmt.Sprint("g", i), "outbound", "gina@example.com", "spam", now), "")
	}
	h.drained()
	pub := jsPublisher{js: h.js}
	if _, err := h.st.Suspend(ctx, "hal@example.com", []rules.Service{rules.ServiceReceive}, store.Actor{Name: "t", Reason: rules.ReasonAdmin, Note: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.SetStatus(ctx, "ivy@example.com", rules.StatusLockout, now.Add(time.Hour), store.Actor{Name: "aupd", Reason: rules.ReasonLockout, Note: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.SetStatus(ctx, "jon@example.com", rules.StatusLockout, now.Add(-time.Minute), store.Actor{Name: "aupd", Reason: rules.ReasonLockout, Note: "test"}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"hal@example.com", "ivy@example.com", "jon@example.com"} {
		if _, err := h.st.FlushOutbox(ctx, a, pub); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{
		`aupd_accounts_suspended{reason="aup_violation"}`: "1",
		`aupd_accounts_suspended{reason="admin"}`:         "1",
		`aupd_accounts_in_lockout`:                        "1",
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		m = h.metrics()
		for s, v := range want {
			if metricValue(m, s) != v {
				return false
			}
		}
		return true
	}, "state gauges did not follow")
	// The notice of gina's suspension is pending or done; never negative.
	if v, err := strconv.ParseFloat(metricValue(m, "aupd_notices_pending"), 64); err != nil || v < 0 {
		t.Errorf("aupd_notices_pending = %q", metricValue(m, "aupd_notices_pending"))
	}
}

func TestReloadReplacesTokens(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	dir := t.TempDir()
	path := dir + "/aupd.yml"
	oldTok, newTok := auth.NewToken(), auth.NewToken()
	write := func(tok string) {
		text := fmt.Sprintf(`data_dir: %s
http: {listen: "127.0.0.1:0"}
nats: {url: %s, consumer: {max_wait: 50ms}}
redis: {addrs: [%q], prefix: %s}
notifier: {eml_dir: notices}
policy: {postfix: {listen: ""}, dovecot: {listen: ""}}
auth: {tokens: [{name: ops, role: admin, hash: %q}]}
`, dir, ns.ClientURL(), testutil.RedisAddr(), prefix, auth.HashToken(tok))
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(oldTok)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	rdb, _ := testutil.Redis(t)
	nc := testutil.NATS(t, cfg.NATS.URL)
	js, _ := jetstream.New(nc)
	h := &harness{t: t, cfg: cfg, js: js, st: store.New(rdb, prefix), path: path}
	h.run()
	get := func(route, tok string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+h.info.HTTPAddr+route, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const accounts, locks = "/api/v1/accounts", "/api/v1/accounts/kim@example.com/session-locks"
	if c := get(accounts, oldTok); c != http.StatusOK {
		t.Fatalf("old token before reload: %d", c)
	}
	write(newTok)
	if err := h.reloadSignal(); err != nil {
		t.Fatal(err)
	}
	for _, route := range []string{accounts, locks} {
		if c := get(route, newTok); c == http.StatusUnauthorized || c == http.StatusForbidden {
			t.Errorf("new token after reload on %s: %d", route, c)
		}
		if c := get(route, oldTok); c != http.StatusUnauthorized {
			t.Errorf("revoked token after reload on %s: %d, want 401", route, c)
		}
	}
}

// reloadSignal sends SIGHUP to this process (aupd's reload signal) and
// waits for the new config to be in force.
func (h *harness) reloadSignal() error {
	p, err := os.FindProcess(os.Getpid())
	if err != nil {
		return err
	}
	before := h.reloads()
	if err := p.Signal(sighup); err != nil {
		return err
	}
	testutil.Eventually(h.t, 10*time.Second, func() bool { return h.reloads() > before }, "SIGHUP did not reload")
	return nil
}

func (h *harness) reloads() float64 {
	v, _ := strconv.ParseFloat(metricValue(h.metrics(), `aupd_config_reloads_total{result="ok"}`), 64)
	return v
}

var sighup = syscall.SIGHUP

func TestConnectErrorHidesNATSCredentials(t *testing.T) {
	_, err := connect(config.NATS{}, "nats://svc:hunter2@127.0.0.1:1,nats://tok3nvalue@127.0.0.1:2", "test", slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "tok3nvalue") {
		t.Errorf("connect error shows a credential: %v", err)
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("connect error does not say where: %v", err)
	}
}
