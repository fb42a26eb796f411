package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/internal/app"
	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// TestIngestARFPipe feeds a feedback-loop report to `aupctl ingest-arf`
// on standard input, as a Postfix pipe transport does, against a whole
// in-process aupd, and checks the complaint is counted once, and the
// exit codes Postfix acts on.
func TestIngestARFPipe(t *testing.T) {
	a := startARFAupd(t)
	rdb, prefix, token, abuseToken, report := a.rdb, a.prefix, a.token, a.abuseToken, a.report
	tokenFile := filepath.Join(t.TempDir(), "publisher.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The documented master.cf line, with this test's server and token
	// file in place of the example's.
	mcf, err := os.ReadFile("../../deploy/postfix/fbl.master.cf")
	if err != nil {
		t.Fatal(err)
	}
	_, argvLine, ok := strings.Cut(string(mcf), "argv=")
	argv := strings.Fields(argvLine)
	if !ok || len(argv) < 2 || filepath.Base(argv[0]) != "aupctl" || argv[1] != "ingest-arf" {
		t.Fatalf("fbl.master.cf argv: %q", argv)
	}
	pipe := func(server, tokFile string, stdin []byte) (int, string, string) {
		var out, errb bytes.Buffer
		code := runIn(pipeArgs(argv, server, tokFile), bytes.NewReader(stdin), &out, &errb)
		return code, out.String(), errb.String()
	}
	server := a.server
	code, out, errs := pipe(server, tokenFile, report)
	if code != 0 || !strings.Contains(out, "accepted complaint against somespammer@example.net") {
		t.Fatalf("ingest-arf: %d %q %q", code, out, errs)
	}
	// Postfix delivers the same report again, with a Message-ID of its
	// own as it adds to a report without one: stored once, counted once.
	if code, out, _ := pipe(server, tokenFile, append([]byte("Message-Id: <20261201.A1@mx.example.net>\n"), report...)); code != 0 || !strings.Contains(out, "duplicate") {
		t.Fatalf("again: %d %q", code, out)
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		n, err := store.WindowLen(context.Background(), rdb, prefix, "somespammer@example.net")
		return err == nil && n == 1
	}, "the complaint was not counted")

	// Another recipient's complaint about the same message, then: what
	// would threshold 1 have done? (The live threshold, 50, did nothing.)
	second := bytes.Replace(report, []byte("Version: 1\n"), []byte("Version: 1\nOriginal-Rcpt-To: <another@example.com>\n"), 1)
	if code, out, errs := pipe(server, tokenFile, second); code != 0 || !strings.Contains(out, "accepted") {
		t.Fatalf("second report: %d %q %q", code, out, errs)
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		n, err := store.WindowLen(context.Background(), rdb, prefix, "somespammer@example.net")
		return err == nil && n == 2
	}, "the second complaint was not counted")
	var rout, rerr bytes.Buffer
	if code := runIn([]string{"replay", "--server", server, "--token", abuseToken, "--threshold", "1", "--since", "1h"}, nil, &rout, &rerr); code != 0 ||
		!strings.Contains(rout.String(), "somespammer@example.net") || !strings.Contains(rout.String(), "suspend at") || !strings.Contains(rout.String(), "count 2") {
		t.Fatalf("replay: %d %q %q", code, rout.String(), rerr.String())
	}
	if code := runIn([]string{"replay", "--server", server, "--token", abuseToken, "--threshold", "1"}, nil, &rout, &rerr); code != 0 {
		t.Fatalf("replay with default since: %d %s", code, rerr.String())
	}
	if code := runIn([]string{"replay", "--server", server, "--token", abuseToken}, nil, &rout, &rerr); code != exitUsage {
		t.Fatalf("replay without threshold: %d", code)
	}
	if code := runIn([]string{"replay", "--server", server, "--token", token, "--threshold", "1"}, nil, &rout, &rerr); code != exitRefused {
		t.Fatalf("replay with a publisher token: %d", code)
	}
	// The rule, in the table and in JSON; a rate alone keeps the live
	// threshold (50), and complaints are not the rate's spam: nothing.
	replay := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runIn(append([]string{"replay", "--server", server, "--token", abuseToken, "--since", "1h"}, args...), nil, &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, errs := replay("--threshold", "1"); code != 0 || !strings.Contains(out, "threshold 1 and each account's live spam-rate rule over") ||
		!strings.Contains(out, "spam_count: count 2 > 1") {
		t.Fatalf("replay: %d %q %q", code, out, errs)
	}
	if code, out, errs := replay("--threshold", "1", "--json"); code != 0 || !strings.Contains(out, `"rule": "spam_count"`) {
		t.Fatalf("replay --json: %d %q %q", code, out, errs)
	}
	if code, out, errs := replay("--rate", "0.5", "--min-spam", "1"); code != 0 ||
		!strings.Contains(out, "each account's live threshold, spam rate over 50% with at least 1 spam,") || !strings.Contains(out, "no account would have been suspended") {
		t.Fatalf("replay --rate: %d %q %q", code, out, errs)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--min-spam", "1"}, "--min-spam goes with --rate"},
		{[]string{"--rate", "x"}, "want a fraction"},
		{[]string{"--rate", "0.05"}, "min_spam"}, // aupd's 400
		{[]string{"--rate", "2", "--min-spam", "1"}, "0.05 is 5%"},
	} {
		if code, _, errs := replay(c.args...); code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("replay %q: exit %d %q, want %d saying %q", c.args, code, errs, exitUsage, c.want)
		}
	}

	// Only a report that can never be counted is refused for good (65,
	// Postfix bounces it). Whatever the provider can fix is 75: Postfix
	// keeps the report queued and retries.
	if code, _, errs := pipe(server, tokenFile, []byte("From: a@example.net\nSubject: hi\n\nnot a report\n")); code != exDataErr || !strings.Contains(errs, "not_arf") {
		t.Fatalf("not ARF: %d %q", code, errs)
	}
	a.wantMetrics(t, `aupd_ingest_refusals_total{reason="not_arf",source="arf"} 1`)
	bad := filepath.Join(t.TempDir(), "bad.token")
	_ = os.WriteFile(bad, []byte("nope"), 0o600)
	unreadable := filepath.Join(t.TempDir(), "unreadable.token")
	_ = os.Mkdir(unreadable, 0o700) // a directory: reading it fails, even as root
	for _, tc := range []struct{ name, server, tokenFile string }{
		{"token refused (401)", server, bad},
		{"token file missing", server, filepath.Join(t.TempDir(), "missing")},
		{"token file unreadable", server, unreadable},
		{"aupd unreachable", "http://127.0.0.1:1", tokenFile},
		{"wrong path behind a proxy (404)", server + "/aupd", tokenFile},
		{"not a URL", "::", tokenFile},
	} {
		if code, _, errs := pipe(tc.server, tc.tokenFile, report); code != exTempFail {
			t.Errorf("%s: exit %d, want %d (%q)", tc.name, code, exTempFail, errs)
		}
	}
	var abuseFile = filepath.Join(t.TempDir(), "abuse.token")
	_ = os.WriteFile(abuseFile, []byte(abuseToken), 0o600)
	if code, _, errs := pipe(server, abuseFile, report); code != exTempFail {
		t.Errorf("a token of another role (403): exit %d (%q)", code, errs)
	}

	// A report larger than the limit, and one cut short, are counted from
	// what they carry; aupctl reads the rest of a long one, so that
	// Postfix sees the message taken.
	third := bytes.Replace(report, []byte("Version: 1\n"), []byte("Version: 1\nOriginal-Rcpt-To: <third@example.com>\n"), 1)
	third = bytes.Replace(third, []byte("Spam Spam Spam\n"), bytes.Repeat([]byte("Spam Spam Spam\n"), 20<<20/15), 1)
	stdin := &countingReader{r: bytes.NewReader(third)}
	var out2, err2 bytes.Buffer
	if code := runIn(pipeArgs(argv, server, tokenFile), stdin, &out2, &err2); code != 0 || !strings.Contains(out2.String(), "accepted") {
		t.Fatalf("20 MiB report: %d %q %q", code, out2.String(), err2.String())
	}
	if stdin.n != int64(len(third)) {
		t.Fatalf("aupctl read %d of the report's %d bytes", stdin.n, len(third))
	}
	fourth := bytes.Replace(report, []byte("Version: 1\n"), []byte("Version: 1\nOriginal-Rcpt-To: <fourth@example.com>\n"), 1)
	fourth = fourth[:bytes.Index(fourth, []byte("Spam Spam Spam"))+5]
	if code, out, errs := pipe(server, tokenFile, fourth); code != 0 || !strings.Contains(out, "accepted") {
		t.Fatalf("truncated report: %d %q %q", code, out, errs)
	}

	// Over HTTP alike: the report the pipe took is a duplicate, and a
	// 20 MiB body, longer than http.ingest_max_bytes, is counted from what
	// it carries.
	post := func(body []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", server+"/api/v1/ingest/arf", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "message/rfc822")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := post(report); st != 202 || !strings.Contains(body, `"duplicates": 1`) {
		t.Fatalf("the pipe's report over HTTP: %d %s", st, body)
	}
	fifth := bytes.Replace(third, []byte("<third@example.com>"), []byte("<fifth@example.com>"), 1)
	if st, body := post(fifth); st != 202 || !strings.Contains(body, `"accepted": 1`) {
		t.Fatalf("20 MiB over HTTP: %d %s", st, body)
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		n, err := store.WindowLen(context.Background(), rdb, prefix, "somespammer@example.net")
		return err == nil && n == 5
	}, "the long and the cut reports were not counted")
	a.wantMetrics(t, `aupd_ingest_events_total{result="accepted",source="arf"} 5`)
}

// pipeArgs are the arguments of the documented master.cf line, with a
// test's server and token file in place of the example's.
func pipeArgs(argv []string, server, tokFile string) []string {
	args := append([]string{}, argv[1:]...)
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--server":
			args[i+1] = server
		case "--token-file":
			args[i+1] = tokFile
		}
	}
	return args
}

// countingReader counts what was read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// arfAupd is a whole in-process aupd taking feedback reports, and the
// RFC 5965 example report dated now.
type arfAupd struct {
	server, token, abuseToken string
	rdb                       *redis.Client
	prefix                    string
	report                    []byte
}

func startARFAupd(t *testing.T) *arfAupd {
	t.Helper()
	rdb, prefix := testutil.Redis(t)
	ns := testutil.NATSServer(t, "")
	const token = "fbl-publisher-token-0123456789"
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.NATS.URL = ns.ClientURL()
	cfg.NATS.Consumer.MaxWait = 50 * time.Millisecond
	cfg.Redis.Addrs = []string{testutil.RedisAddr()}
	cfg.Redis.Prefix = prefix
	cfg.Redis.Autostart = false
	cfg.Notifier.EMLDir = t.TempDir()
	cfg.Policy.Postfix.Listen = ""
	cfg.Policy.Dovecot.Listen = ""
	cfg.Companies = []companies.Company{{ID: "net", Domains: []string{"example.net"}}}
	const abuseToken = "abuse-desk-token-0123456789"
	cfg.Auth.Tokens = []auth.TokenConfig{{Name: "fbl", Hash: auth.HashToken(token), Role: auth.RolePublisher},
		{Name: "desk", Hash: auth.HashToken(abuseToken), Role: auth.RoleAbuse}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	info := runAupd(t, cfg)

	report, err := os.ReadFile("../../internal/arf/testdata/rfc5965-b1.eml")
	if err != nil {
		t.Fatal(err)
	}
	// The RFC's example is from 2005, far outside the window: date it now.
	report = bytes.Replace(report, []byte("Date: Thu, 8 Mar 2005 17:40:36 EDT"), []byte("Date: "+time.Now().UTC().Format(time.RFC1123Z)), 1)
	return &arfAupd{server: "http://" + info.HTTPAddr, token: token, abuseToken: abuseToken, rdb: rdb, prefix: prefix, report: report}
}

// wantMetrics checks lines of aupd's /metrics.
func (a *arfAupd) wantMetrics(t *testing.T, lines ...string) {
	t.Helper()
	resp, err := http.Get(a.server + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		if !strings.Contains(string(b), l+"\n") {
			t.Errorf("metrics lack %s", l)
		}
	}
}

// TestReplayText: what aupctl replay prints of a report.
func TestReplayText(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	cs := []apitypes.ReplayCrossing{
		{At: at, Rule: "spam_count", Count: 7, Threshold: 6, Action: "suspend"},
		{At: at, Rule: "spam_rate", Count: 3, Threshold: 6, Action: "report", Rate: &events.RateFacts{Spam: 3, Ham: 4, Limit: 0.25, MinSpam: 3}},
		{At: at, Rule: "spam_count", Count: 7, Threshold: 6, Action: "suspend", Rate: &events.RateFacts{Spam: 7, Ham: 18, Limit: 0.25, MinSpam: 3}},
	}
	want := "suspend at 2026-12-07T10:00:00Z, spam_count: count 7 > 6; " +
		"report at 2026-12-07T10:00:00Z, spam_rate: spam 3 of 7, 42.9% > 25% (count 3); " +
		"suspend at 2026-12-07T10:00:00Z, spam_count: count 7 > 6 (spam 7 of 25, 28% > 25%)"
	if got := crossingsText(cs); got != want {
		t.Errorf("crossings:\n%s\nwant\n%s", got, want)
	}
	if got := crossingsText(nil); got != "-" {
		t.Errorf("no crossings: %q", got)
	}
	for _, c := range []struct {
		rep  apitypes.ReplayReport
		want string
	}{
		{apitypes.ReplayReport{Threshold: 20}, "threshold 20 and each account's live spam-rate rule"},
		{apitypes.ReplayReport{Threshold: 20, SpamRate: &rules.SpamRateSetting{}}, "threshold 20, spam-rate rule off,"},
		{apitypes.ReplayReport{SpamRate: &rules.SpamRateSetting{Rate: 0.003, MinSpam: 20}}, "each account's live threshold, spam rate over 0.3% with at least 20 spam,"},
	} {
		if got := tried(&c.rep); got != c.want {
			t.Errorf("tried(%+v) = %q, want %q", c.rep, got, c.want)
		}
	}
}

// runAupd runs aupd with cfg until the test ends and returns what it
// listens on once it is ready.
func runAupd(t *testing.T, cfg *config.Config) app.Info {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Info, 1)
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, app.Options{Config: cfg, OnReady: func(i app.Info) { ready <- i }}) }()
	var info app.Info
	select {
	case info = <-ready:
	case err := <-done:
		t.Fatalf("aupd: %v", err)
	}
	t.Cleanup(func() { cancel(); <-done })
	return info
}
