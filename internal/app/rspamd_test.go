package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/api"
	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/testutil"
)

// TestRspamdMetadataExporter runs a private rspamd (Debian's package,
// installed with apt-get when missing) on loopback ports with the
// documented deploy/rspamd/local.d/metadata_exporter.conf pointed at an
// in-process aupd, scans a GTUBE message with rspamc as an authenticated
// user and then as inbound mail to a local account, and checks what aupd
// counted.
//
// rspamd stops processing (task flag "skip", which metadata_exporter
// honours) when the GTUBE pattern is in a text part, so the test message
// carries the GTUBE string in its Subject, and the private instance scores
// it with a multimap rule of the test's own: a real scan, a real reject.
//
// AUPD_RSPAMD=skip skips it; AUPD_RSPAMD=require makes a skip a failure.
func TestRspamdMetadataExporter(t *testing.T) {
	skip := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf("rspamd: "+format, args...)
		if os.Getenv("AUPD_RSPAMD") == "require" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if os.Getenv("AUPD_RSPAMD") == "skip" {
		skip("AUPD_RSPAMD=skip")
	}
	if testing.Short() {
		skip("skipped in -short mode")
	}
	rspamdBin, rspamcBin := ensureRspamd(t, skip)

	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	h := start(t, withIngestTokens(t, testConfig(t, ns.ClientURL(), prefix)))

	// The documented exporter config, with aupd's address and a publisher
	// token set, as an operator would.
	conf, err := os.ReadFile("../../deploy/rspamd/local.d/metadata_exporter.conf")
	if err != nil {
		t.Fatal(err)
	}
	c := strings.ReplaceAll(string(conf), "http://127.0.0.1:9390", "http://"+h.info.HTTPAddr)
	c = strings.ReplaceAll(c, "CHANGE-ME-publisher-token", tokPublisher)
	if c == string(conf) || strings.Contains(c, "CHANGE-ME") {
		t.Fatal("the documented config no longer has the SET lines the test fills in")
	}
	// One rule of the test's own besides the documented ones: big@globex.test's
	// mail is also posted whole (the default formatter), deferred on any
	// failure, so that aupd gets a post larger than its body limit.
	whole := "rules {\n  AUPD_TEST_WHOLE {\n    backend = \"http\";\n    url = \"http://" + h.info.HTTPAddr + "/api/v1/ingest/rspamd\";\n" +
		"    user = \"rspamd\";\n    password = \"" + tokPublisher + "\";\n    formatter = \"default\";\n    meta_headers = true;\n" +
		"    mime_type = \"message/rfc822\";\n    selector = \"aupd_test_big\";\n    defer = true;\n    timeout = 60s;\n  }\n"
	bigSel := "custom_select {\n  aupd_test_big = <<EOD\nreturn function(task)\n  return task:get_user() == 'big@globex.test'\nend\nEOD;\n"
	if !strings.Contains(c, "rules {\n") || !strings.Contains(c, "custom_select {\n") {
		t.Fatal("the documented config no longer has the blocks the test adds to")
	}
	c = strings.Replace(strings.Replace(c, "rules {\n", whole, 1), "custom_select {\n", bigSel, 1)
	// The ham rule posts through a proxy that records each post's size,
	// on to aupd unchanged.
	hamPosts := &postSizes{}
	proxy := httptest.NewServer(hamPosts.wrap(httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: h.info.HTTPAddr})))
	t.Cleanup(proxy.Close)
	hamRule := strings.Index(c, "AUPD_OUTBOUND_HAM {")
	hamURL := strings.Index(c[hamRule:], "http://"+h.info.HTTPAddr)
	if hamRule < 0 || hamURL < 0 {
		t.Fatal("the documented config no longer has the ham rule with a url")
	}
	c = c[:hamRule+hamURL] + proxy.URL + c[hamRule+hamURL+len("http://"+h.info.HTTPAddr):]

	dir, err := os.MkdirTemp("", "aupd-rspamd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	files := map[string]string{
		"local.d/metadata_exporter.conf": c,
		"local.d/options.inc":            "dns {\n  nameserver = [\"127.0.0.1:1\"];\n  timeout = 0.2s;\n  retransmits = 1;\n}\n",
		"local.d/multimap.conf":          "AUPD_TEST_GTUBE {\n  type = \"header\";\n  header = \"Subject\";\n  regexp = true;\n  map = \"" + dir + "/gtube.map\";\n  score = 20.0;\n}\n",
		"gtube.map":                      "/GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL/\n",
		"override.d/fuzzy_check.conf":    "enabled = false;\n", // no network here
		"override.d/logging.inc":         "type = \"console\";\nlevel = \"info\";\n",
	}
	for _, d := range []string{"local.d", "override.d", "db", "run", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vars := []string{"--var=LOCAL_CONFDIR=" + dir, "--var=DBDIR=" + dir + "/db", "--var=RUNDIR=" + dir + "/run", "--var=LOGDIR=" + dir + "/log"}
	if out, err := exec.Command("rspamadm", append(append([]string{}, vars...), "configtest", "-c", "/etc/rspamd/rspamd.conf")...).CombinedOutput(); err != nil {
		t.Fatalf("rspamadm configtest with the documented config: %v\n%s", err, tail(out, 3000))
	}
	ports, cmd, logs := startRspamd(t, rspamdBin, dir, vars, skip)

	gtube := "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	scan := func(msg string, args ...string) string {
		t.Helper()
		sctx, scancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer scancel()
		cmd := exec.CommandContext(sctx, rspamcBin, append([]string{"-h", ports[0], "-t", "60"}, args...)...)
		cmd.Stdin = strings.NewReader(msg)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("rspamc %v: %v\n%s", args, err, out)
		}
		return string(out)
	}

	// Outbound: alice authenticated and sends spam.
	out := "From: Alice <alice@globex.test>\r\nTo: bob@example.net\r\nSubject: Offer " + gtube + "\r\n" +
		"Message-ID: <out-1@globex.test>\r\nDate: Tue, 01 Dec 2026 08:00:00 +0000\r\n\r\nCheap meds, buy now.\r\n"
	res := scan(out, "-u", "alice@globex.test", "-F", "alice@globex.test", "-r", "bob@example.net", "-i", "192.0.2.10", "--header", "Queue-Id: 4QOUT1")
	if !strings.Contains(res, "reject") {
		t.Fatalf("outbound scan did not reject: %s", res)
	}
	// Inbound: an outside sender to a local account (and one that is
	// not). The verdict is about the sender: statistics only, and carol,
	// the recipient, is never held responsible.
	in := "From: Spammer <spam@outside.example>\r\nTo: carol@example.com\r\nSubject: Win " + gtube + "\r\n" +
		"Message-ID: <in-1@outside.example>\r\nDate: Tue, 01 Dec 2026 08:01:00 +0000\r\n\r\nYou have won.\r\n"
	res = scan(in, "-F", "spam@outside.example", "-r", "carol@example.com", "-r", "someone@elsewhere.example", "-i", "203.0.113.7", "--header", "Queue-Id: 4QIN1")
	if !strings.Contains(res, "reject") {
		t.Fatalf("inbound scan did not reject: %s", res)
	}
	// Inbound local-to-local mail (a local sender that did not
	// authenticate): it counts against that sender.
	l2l := "From: Bob <bob@example.com>\r\nTo: carol@example.com\r\nSubject: Deal " + gtube + "\r\n" +
		"Message-ID: <in-2@example.com>\r\nDate: Tue, 01 Dec 2026 08:02:00 +0000\r\n\r\nLocal spam.\r\n"
	res = scan(l2l, "-F", "bob@example.com", "-r", "carol@example.com", "-i", "192.0.2.20", "--header", "Queue-Id: 4QIN2")
	if !strings.Contains(res, "reject") {
		t.Fatalf("local-to-local scan did not reject: %s", res)
	}
	// Ham from an authenticated user is exported by the ham rule, for
	// the spam-rate rule: an outbound ham verdict, which counts nothing.
	scan("From: alice@globex.test\r\nTo: bob@example.net\r\nSubject: lunch\r\nMessage-ID: <ham-1@globex.test>\r\n\r\nAt noon?\r\n",
		"-u", "alice@globex.test", "-F", "alice@globex.test", "-r", "bob@example.net", "-i", "192.0.2.10", "--header", "Queue-Id: 4QHAM1")

	testutil.Eventually(t, 90*time.Second, func() bool {
		return h.count("alice@globex.test") == 1 && h.count("bob@example.com") == 1 &&
			strings.Contains(h.metrics(), `aupd_events_total{direction="outbound",outcome="stats",verdict="ham"} 1`)
	}, "aupd did not count both, or take alice's ham: alice %d bob %d %s", h.count("alice@globex.test"), h.count("bob@example.com"),
		grepLines(h.metrics(), `verdict="ham"`))
	h.drained()
	if n := h.count("carol@example.com"); n != 0 {
		t.Fatalf("the recipient of spam was counted %d times", n)
	}

	// The events as stored: direction, account, verdict, id, sample, and
	// the sender rspamd saw (rspamc -i, -u): the client's address, and
	// the login of an authenticated sender.
	type seen struct{ subject, account, verdict, id, raw, source, ip, login string }
	var got []seen
	for _, m := range h.streamMsgs(h.cfg.NATS.Verdicts.Name) {
		var v struct {
			ID, Direction, Account, Verdict, Source string
			Score                                   *float64
			Message                                 struct {
				Subject, Raw string
			}
			Sender struct{ IP, Login string }
		}
		if err := jsonUnmarshal(m.Data, &v); err != nil {
			t.Fatal(err)
		}
		if v.Score == nil || v.Verdict != "ham" && *v.Score < 15 || !strings.HasPrefix(v.Source, "rspamd") || m.Header.Get("Nats-Msg-Id") != v.ID {
			t.Errorf("event %s: score %v source %q msg-id %q", m.Subject, v.Score, v.Source, m.Header.Get("Nats-Msg-Id"))
		}
		got = append(got, seen{m.Subject, v.Account, v.Verdict, v.ID, v.Message.Raw, v.Source, v.Sender.IP, v.Sender.Login})
	}
	// The ham's post is the last one made (posts are made in the order
	// of the scans, but the ham rule's may overtake): take it out by
	// verdict.
	var hams []seen
	got = slices.DeleteFunc(got, func(g seen) bool {
		if g.verdict == "ham" {
			hams = append(hams, g)
		}
		return g.verdict == "ham"
	})
	if len(got) != 3 || len(hams) != 1 {
		t.Fatalf("stored %d events and %d ham, want 3 and 1: %+v %+v", len(got), len(hams), got, hams)
	}
	// Ham keeps the message's header fields, not the message.
	if g := hams[0]; g.subject != "aup.verdict.outbound" || g.account != "alice@globex.test" || g.raw != "" ||
		!strings.HasPrefix(g.id, "rspamd-") || g.login != "alice@globex.test" {
		t.Errorf("ham event: %+v", g)
	}
	if g := got[0]; g.subject != "aup.verdict.outbound" || g.account != "alice@globex.test" || g.verdict != "spam" ||
		!strings.Contains(g.raw, "Cheap meds") || !strings.HasPrefix(g.id, "rspamd-") || g.ip != "192.0.2.10" || g.login != "alice@globex.test" {
		t.Errorf("outbound event: %+v", g)
	}
	if g := got[1]; g.subject != "aup.verdict.inbound" || g.account != "spam@outside.example" || g.verdict != "spam" ||
		!strings.Contains(g.raw, "You have won") || g.ip != "203.0.113.7" || g.login != "" {
		t.Errorf("inbound event: %+v", g)
	}
	if g := got[2]; g.subject != "aup.verdict.inbound" || g.account != "bob@example.com" || !strings.Contains(g.raw, "Local spam") ||
		g.ip != "192.0.2.20" || g.login != "" {
		t.Errorf("local-to-local event: %+v", g)
	}
	m := h.metrics()
	if !strings.Contains(m, `aupd_events_total{direction="inbound",outcome="external",verdict="spam"} 1`) {
		t.Errorf("the outside sender's verdict is not statistics: %s", grepLines(m, `direction="inbound"`))
	}
	if !strings.Contains(m, `aupd_ingest_events_total{result="accepted",source="rspamd"} 4`) {
		t.Errorf("metrics: %s", grepLines(m, "aupd_ingest_events_total"))
	}

	// A message larger than aupd's body limit, scanned three times (the
	// MTA retrying it with three queue ids and trace headers): aupd reads
	// each post to its end, rspamd never defers the message (any failed
	// post of the deferring rules would make it "soft reject"), and the
	// message counts once.
	var big strings.Builder
	big.WriteString("From: Big <big@globex.test>\r\nTo: bob@example.net\r\nSubject: Files " + gtube + "\r\n" +
		"Message-ID: <big-1@globex.test>\r\nDate: Tue, 01 Dec 2026 08:03:00 +0000\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nBig spam.\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	line := strings.Repeat("QUJD", 19) + "\r\n"
	for big.Len() < api.DefaultIngestMaxBytes+24<<20 {
		big.WriteString(line)
	}
	big.WriteString("--b1--\r\n")
	for i, qid := range []string{"4QBIG1", "4QBIG2", "4QBIG3"} {
		msg := fmt.Sprintf("Received: from client by mx.globex.test with ESMTPSA id %s; attempt %d\r\n", qid, i) + big.String()
		res := scan(msg, "-u", "big@globex.test", "-F", "big@globex.test", "-r", "bob@example.net", "-i", "192.0.2.10", "--header", "Queue-Id: "+qid)
		if !strings.Contains(res, "Action: reject") || strings.Contains(res, "soft reject") {
			t.Fatalf("scan %d of the big message: %s", i+1, tail([]byte(res), 2000))
		}
	}
	// A phish at stock scores: the PHISHING symbol below "add header" is
	// still exported, as phish.
	phish := "From: PayPal <service@globex.test>\r\nTo: carol@example.net\r\nSubject: Your account is limited\r\n" +
		"Message-ID: <phish-1@globex.test>\r\nDate: Tue, 01 Dec 2026 08:04:00 +0000\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Dear customer, please confirm your details:</p>" +
		"<p><a href=\"http://paypal.com.secure-login.example.org/signin\">https://www.paypal.com/signin</a></p></body></html>\r\n"
	res = scan(phish, "-u", "service@globex.test", "-F", "service@globex.test", "-r", "carol@example.net", "-i", "192.0.2.10", "--header", "Queue-Id: 4QPH1")
	if !strings.Contains(res, "PHISHING") || !strings.Contains(res, "Action: no action") {
		t.Fatalf("the phish did not get PHISHING at no action: %s", res)
	}
	// The same phish from outside (no authentication): exported by the
	// inbound rule, as statistics about the outside sender.
	inPhish := strings.NewReplacer("service@globex.test", "service@paypal-alerts.example", "phish-1@", "phish-2@",
		"Tue, 01 Dec 2026 08:04:00 +0000", time.Now().Format(time.RFC1123Z)).Replace(phish)
	res = scan(inPhish, "-F", "service@paypal-alerts.example", "-r", "carol@example.net", "-i", "203.0.113.9",
		"--hostname", "mail.paypal-alerts.example", "--helo", "mail.paypal-alerts.example", "--header", "Queue-Id: 4QPH2")
	// Unauthenticated mail scores a few points more (no DNS here): below
	// the spam actions all the same.
	if !strings.Contains(res, "PHISHING") || !strings.Contains(res, "Action: no action") && !strings.Contains(res, "Action: greylist") {
		t.Fatalf("the inbound phish did not get PHISHING below the spam actions: %s", res)
	}
	testutil.Eventually(t, 90*time.Second, func() bool {
		return h.count("big@globex.test") == 1 && h.count("service@globex.test") == 1 &&
			strings.Contains(h.metrics(), `aupd_events_total{direction="inbound",outcome="external",verdict="phish"} 1`)
	}, "aupd did not count the big message and the phish once, or the inbound phish: big %d phish %d %s", h.count("big@globex.test"), h.count("service@globex.test"),
		grepLines(h.metrics(), `direction="inbound"`))
	h.drained()
	if n := h.count("big@globex.test"); n != 1 {
		t.Fatalf("the big message, scanned three times, counted %d times", n)
	}
	var bigIDs, phishes, inPhishes int
	for _, m := range h.streamMsgs(h.cfg.NATS.Verdicts.Name) {
		var v struct{ Account, Verdict string }
		if err := jsonUnmarshal(m.Data, &v); err != nil {
			t.Fatal(err)
		}
		switch v.Account {
		case "big@globex.test":
			bigIDs++
		case "service@globex.test":
			if v.Verdict != "phish" {
				t.Errorf("the phish was stored as %s", v.Verdict)
			}
			phishes++
		case "service@paypal-alerts.example":
			if v.Verdict != "phish" {
				t.Errorf("the inbound phish was stored as %s", v.Verdict)
			}
			inPhishes++
		}
	}
	if bigIDs != 1 || phishes != 1 || inPhishes != 1 {
		t.Errorf("stored %d events of the big message (want 1: six posts, one id), %d of the phish, %d of the inbound phish", bigIDs, phishes, inPhishes)
	}
	if l := logs.String(); strings.Contains(l, "deferring message") || strings.Contains(l, "Connection reset") {
		t.Errorf("rspamd deferred a message or saw a reset:\n%s", grepLines(l, "defer")+grepLines(l, "reset"))
	}

	// A big ham (300 KiB of body), scanned twice as an MTA's retry would
	// (another queue id, one more trace header): the ham rule posts the
	// header and the body's first 64 KiB, and the two posts are one
	// verdict.
	hamHeader := "From: alice@globex.test\r\nTo: bob@example.net\r\nSubject: the report\r\nMessage-ID: <ham-big@globex.test>\r\n" +
		"Content-Type: text/plain\r\n"
	hamBody := strings.Repeat("The quarterly figures, line by line, as agreed.\r\n", 300<<10/50)
	before := hamPosts.count()
	for i, trace := range []string{"", "Received: from relay.globex.test by mx.globex.test; Tue, 01 Dec 2026 08:10:00 +0000\r\n"} {
		scan(trace+hamHeader+"\r\n"+hamBody, "-u", "alice@globex.test", "-F", "alice@globex.test", "-r", "bob@example.net", "-i", "192.0.2.10",
			"--header", fmt.Sprintf("Queue-Id: 4QHAMBIG%d", i))
		testutil.Eventually(t, 60*time.Second, func() bool { return hamPosts.count() == before+i+1 }, "rspamd did not post big ham %d", i)
		header := len(trace) + len(hamHeader)
		if n := hamPosts.last(); n < int64(header+2+64<<10) || n > int64(header+4+4+64<<10) {
			t.Errorf("big ham %d: posted %d bytes, want the header (%d bytes), the blank line and 64 KiB of body", i, n, header)
		}
	}
	testutil.Eventually(t, 60*time.Second, func() bool {
		return strings.Contains(h.metrics(), `aupd_events_total{direction="outbound",outcome="stats",verdict="ham"} 2`)
	}, "the big ham's two posts were not one ham verdict: %s", grepLines(h.metrics(), `verdict="ham"`))

	// A rotated token: the operator gives the publisher token a new secret
	// in aupd (here by a restart on the same address; a reload does the
	// same) before rspamd has it. rspamd's post is answered 401, so it
	// defers the spam (soft reject: the MTA keeps the message) and counts
	// nothing; then 429 once the address is held back. With rspamd's
	// config given the new token and rspamd reloaded (SIGHUP, as
	// systemctl reload does), and the hold lifted as the runbook says, the
	// MTA's retry of the same message is counted, once.
	const rotated = "publisher-token-rotated-9876543210"
	h.stop()
	h.cfg.HTTP.Listen = h.info.HTTPAddr
	for i := range h.cfg.Auth.Tokens {
		if h.cfg.Auth.Tokens[i].Name == "filters" {
			h.cfg.Auth.Tokens[i].Hash = auth.HashToken(rotated)
		}
	}
	h.run()
	counted := h.count("alice@globex.test")
	retry := strings.ReplaceAll(out, "out-1@", "out-rotated@")
	retryArgs := []string{"-u", "alice@globex.test", "-F", "alice@globex.test", "-r", "bob@example.net", "-i", "192.0.2.10", "--header", "Queue-Id: 4QROT1"}
	hamBefore := hamPosts.count()
	if res = scan(retry, retryArgs...); !strings.Contains(res, "soft reject") {
		t.Errorf("spam with a rotated token: %s; want soft reject (deferred)", tail([]byte(res), 2000))
	}
	// One post: the ham rule must not export the deferred spam, which its
	// selector would see as "soft reject" once the spam rule's post failed.
	if m := h.metrics(); !strings.Contains(m, `aupd_api_requests_total{code="401",route="POST /api/v1/ingest/rspamd"} 1`) {
		t.Errorf("the post with the old token was not answered 401 once: %s", grepLines(m, "ingest/rspamd"))
	}
	if n := hamPosts.count() - hamBefore; n != 0 {
		t.Errorf("the ham rule posted the deferred spam (%d posts)", n)
	}
	// More of the queue's mail keeps coming with the old token: past
	// http.auth_failures refused posts aupd holds rspamd's address back
	// (429), the right token too, until the window ends.
	for i := 0; !strings.Contains(h.metrics(), `aupd_api_requests_total{code="429",route="POST /api/v1/ingest/rspamd"}`); i++ {
		if i == 2*h.cfg.HTTP.AuthFailures {
			t.Fatalf("%d posts with the old token, none held back: %s", i, grepLines(h.metrics(), "ingest/rspamd"))
		}
		if res = scan(strings.ReplaceAll(out, "out-1@", fmt.Sprintf("out-queued-%d@", i)), "-u", "alice@globex.test", "-F", "alice@globex.test",
			"-r", "bob@example.net", "-i", "192.0.2.10", "--header", fmt.Sprintf("Queue-Id: 4QQUEUED%d", i)); !strings.Contains(res, "soft reject") {
			t.Errorf("spam %d with the old token: %s; want soft reject", i, tail([]byte(res), 2000))
		}
	}
	// A reload is done when a new scanning worker has started and an old
	// one has ended (the old ones stop taking scans on the signal).
	started, ended := "starting normal process", "do not respawn process normal"
	nstarted, nended := strings.Count(logs.String(), started), strings.Count(logs.String(), ended)
	if err := os.WriteFile(filepath.Join(dir, "local.d/metadata_exporter.conf"), []byte(strings.ReplaceAll(c, tokPublisher, rotated)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() bool {
		l := logs.String()
		return strings.Count(l, started) > nstarted && strings.Count(l, ended) > nended
	}, "rspamd did not replace its scanning worker after SIGHUP")
	// The MTA's retries of the same message: still held back (429,
	// deferred again) until the runbook's fix, deleting the address's
	// counter; then stored.
	retryArgs[len(retryArgs)-1] = "Queue-Id: 4QROT2"
	if res = scan(retry, retryArgs...); !strings.Contains(res, "soft reject") {
		t.Errorf("the retry with the new token while held back: %s; want soft reject (deferred)", tail([]byte(res), 2000))
	}
	rdb, _ := testutil.Redis(t)
	if n, err := rdb.Del(context.Background(), h.cfg.Redis.Prefix+":auth:failures:127.0.0.1").Result(); err != nil || n != 1 {
		t.Fatalf("the runbook's DEL of rspamd's counter: %d %v", n, err)
	}
	retryArgs[len(retryArgs)-1] = "Queue-Id: 4QROT3"
	if res = scan(retry, retryArgs...); strings.Contains(res, "soft reject") || !strings.Contains(res, "reject") {
		t.Errorf("the retry with the new token: %s; want reject, not deferred", tail([]byte(res), 2000))
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return h.count("alice@globex.test") == counted+1 },
		"the retry with the new token was not counted: alice %d, was %d", h.count("alice@globex.test"), counted)
	h.drained()
	if n := h.count("alice@globex.test"); n != counted+1 {
		t.Errorf("the deferred message counted %d times; want once", n-counted)
	}

	// aupd down: the spam rule's post fails and rspamd defers the message
	// (soft reject: the MTA keeps it and retries); the ham rule does not
	// defer, so an authenticated user's ordinary mail goes on.
	h.stop()
	res = scan("From: alice@globex.test\r\nTo: bob@example.net\r\nSubject: minutes\r\nMessage-ID: <ham-2@globex.test>\r\n\r\nAttached.\r\n",
		"-u", "alice@globex.test", "-F", "alice@globex.test", "-r", "bob@example.net", "-i", "192.0.2.10", "--header", "Queue-Id: 4QHAM2")
	if strings.Contains(res, "soft reject") || !strings.Contains(res, "Action: no action") {
		t.Errorf("ham with aupd down: %s; want no action", tail([]byte(res), 2000))
	}
	hamBefore = hamPosts.count()
	res = scan(strings.ReplaceAll(out, "out-1@", "out-2@"),
		"-u", "alice@globex.test", "-F", "alice@globex.test", "-r", "bob@example.net", "-i", "192.0.2.10", "--header", "Queue-Id: 4QOUT2")
	if !strings.Contains(res, "soft reject") {
		t.Errorf("spam with aupd down: %s; want soft reject (deferred)", tail([]byte(res), 2000))
	}
	if n := hamPosts.count() - hamBefore; n != 0 {
		t.Errorf("with aupd down the ham rule posted the deferred spam (%d posts)", n)
	}
}

// startRspamd starts the private rspamd on free loopback ports and waits
// for its scanning worker to listen. The ports are free when picked but
// not held, so another process may take one before rspamd binds it; rspamd
// then exits, and it is started again on new ports.
func startRspamd(t *testing.T, bin, dir string, vars []string, skip func(string, ...any)) ([]string, *exec.Cmd, *lockedBuffer) {
	t.Helper()
	const attempts = 3
	for attempt := 1; ; attempt++ {
		ports := freeLoopbackPorts(t, 4)
		files := map[string]string{
			"override.d/worker-normal.inc":     "bind_socket = \"" + ports[0] + "\";\n",
			"override.d/worker-controller.inc": "bind_socket = \"" + ports[1] + "\";\n",
			"override.d/worker-proxy.inc":      "bind_socket = \"" + ports[2] + "\";\n",
			"override.d/worker-fuzzy.inc":      "bind_socket = \"" + ports[3] + "\";\ncount = -1;\n",
		}
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		run := spawnRspamd(t, bin, vars, skip)
		switch {
		case waitListening(run, ports[0], 90*time.Second):
			return ports, run.cmd, run.logs
		case !run.hasExited():
			t.Fatalf("rspamd did not listen on %s", ports[0])
		case strings.Contains(run.logs.String(), "Address already in use") && attempt < attempts:
			run.retried = true // its log is not the failing one's
			t.Logf("rspamd attempt %d of %d: a port was taken before rspamd bound it; trying new ports:\n%s",
				attempt, attempts, grepLines(run.logs.String(), "Address already in use"))
		default:
			t.Fatalf("rspamd exited (%v) before it listened on %s", run.err, ports[0])
		}
	}
}

// rspamdRun is one start of the private rspamd.
type rspamdRun struct {
	cmd     *exec.Cmd
	logs    *lockedBuffer // rspamd writes it while the test reads it
	exited  chan struct{} // closed once cmd.Wait has returned, with err
	err     error
	retried bool // given up on for a taken port
}

func (r *rspamdRun) hasExited() bool {
	select {
	case <-r.exited:
		return true
	default:
		return false
	}
}

// spawnRspamd starts rspamd in the foreground with its log in a buffer,
// and stops it, with all it forked, when the test ends.
func spawnRspamd(t *testing.T, bin string, vars []string, skip func(string, ...any)) *rspamdRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	run := &rspamdRun{logs: &lockedBuffer{}, exited: make(chan struct{})}
	cmd := exec.CommandContext(ctx, bin, append([]string{"-f", "-i", "-u", "root", "-g", "root", "-c", "/etc/rspamd/rspamd.conf"}, vars...)...)
	cmd.Stdout, cmd.Stderr = run.logs, run.logs
	// rspamd forks its workers: stop the whole process group, or they
	// outlive the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		time.AfterFunc(5*time.Second, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
		return nil
	}
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		skip("cannot start rspamd: %v", err)
	}
	run.cmd = cmd
	// The only cmd.Wait: the startup watches for rspamd exiting, the
	// cleanup for it having stopped.
	go func() {
		run.err = cmd.Wait()
		// Workers forked before a failed bind would be left running
		// (cmd.Cancel is not called once Wait has returned).
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		close(run.exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-run.exited
		if t.Failed() && !run.retried {
			t.Logf("rspamd log:\n%s", tail(run.logs.Bytes(), 8000))
		}
	})
	return run
}

// waitListening reports whether rspamd's scanning worker accepts
// connections on addr before the timeout, giving up early when rspamd
// exits. rspamd binds that socket after the others, so once it is up no
// bind is left to fail.
func waitListening(run *rspamdRun, addr string, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		// A process that took the port accepts too: the worker's start in
		// rspamd's log says the socket is rspamd's.
		if strings.Contains(grepLines(run.logs.String(), "starting normal process"), "listen on: "+addr) {
			if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
				c.Close()
				return true
			}
		}
		select {
		case <-run.exited:
			return false
		case <-deadline.C:
			return false
		case <-poll.C:
		}
	}
}

// postSizes records the size of each request a handler serves.
type postSizes struct {
	mu    sync.Mutex
	sizes []int64
}

func (p *postSizes) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		p.sizes = append(p.sizes, int64(len(body)))
		p.mu.Unlock()
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		next.ServeHTTP(w, r)
	})
}

func (p *postSizes) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sizes)
}

func (p *postSizes) last() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sizes[len(p.sizes)-1]
}

// ensureRspamd finds rspamd and rspamc, installing Debian's rspamd with
// apt-get when they are missing (waiting for the package manager's lock,
// as scripts/ensure-services does, rather than failing while another
// process holds it).
func ensureRspamd(t *testing.T, skip func(string, ...any)) (string, string) {
	t.Helper()
	d, err1 := exec.LookPath("rspamd")
	c, err2 := exec.LookPath("rspamc")
	if err1 == nil && err2 == nil {
		return d, c
	}
	if os.Getuid() != 0 {
		skip("rspamd is not installed and installing it needs root (apt-get install rspamd)")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		skip("rspamd is not installed and there is no apt-get")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends", "rspamd")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if err := cmd.Run(); err != nil {
		upd := exec.CommandContext(ctx, "apt-get", "-o", "DPkg::Lock::Timeout=600", "update")
		_ = upd.Run()
		cmd = exec.CommandContext(ctx, "apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends", "rspamd")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			skip("cannot install rspamd (%v):\n%s", err, tail(out, 2000))
		}
	}
	d, err1 = exec.LookPath("rspamd")
	c, err2 = exec.LookPath("rspamc")
	if err := errors.Join(err1, err2); err != nil {
		skip("rspamd installed but not found: %v", err)
	}
	return d, c
}

// lockedBuffer is a bytes.Buffer that a process's output can be copied
// into while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

func (l *lockedBuffer) String() string { return string(l.Bytes()) }

func freeLoopbackPorts(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
