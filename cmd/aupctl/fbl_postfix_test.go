package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// TestFBLPipeThroughPostfix runs a private real Postfix with the
// documented FBL pipe (deploy/postfix/fbl.master.cf, only its paths, the
// server and the user changed) in front of an in-process aupd:
//
//   - the RFC 5965 example, which has no Message-ID (Postfix adds a fresh
//     one on each submission), delivered three times counts once;
//   - with a refused token the report is deferred, not bounced, stays in
//     Postfix's queue, and counts once after the token is fixed and the
//     queue flushed.
func TestFBLPipeThroughPostfix(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
		t.Skip("Postfix is not installed (scripts/mailstack install)")
	}
	if os.Geteuid() != 0 {
		t.Skip("a private Postfix needs root")
	}
	aupd := startARFAupd(t)

	// A directory the pipe's user (nobody) can read: aupctl and its token.
	dir, err := os.MkdirTemp("", "aupd-fbl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	aupctl := filepath.Join(bin, "aupctl")
	if out, err := exec.Command("go", "build", "-o", aupctl, ".").CombinedOutput(); err != nil {
		t.Fatalf("build aupctl: %v\n%s", err, out)
	}
	tokenFile := filepath.Join(bin, "publisher.token")
	writeToken := func(tok string) {
		t.Helper()
		if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(tokenFile, 65534, 65534); err != nil { // nobody
			t.Fatal(err)
		}
	}
	writeToken(aupd.token)

	pf := startPostfix(t, dir, aupctl, aupd.server, tokenFile)

	report := aupd.report
	if head, _, _ := bytes.Cut(report, []byte("\n\n")); bytes.Contains(bytes.ToLower(head), []byte("message-id:")) {
		t.Fatal("the example report has a Message-ID of its own")
	}
	count := func() int64 {
		n, err := store.WindowLen(context.Background(), aupd.rdb, aupd.prefix, "somespammer@example.net")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Three submissions of one report: three deliveries, each with its
	// own Message-ID from Postfix, one complaint.
	for range 3 {
		pf.submit(report)
	}
	pf.waitLog("status=sent", 3)
	ids := pf.messageIDs()
	if len(ids) != 3 || ids[0] == ids[1] || ids[1] == ids[2] {
		t.Fatalf("Postfix's Message-IDs: %v", ids)
	}
	// Each delivery ended with aupd's answer: one stored, two duplicates.
	aupd.wantMetrics(t, `aupd_ingest_events_total{result="accepted",source="arf"} 1`, `aupd_ingest_events_total{result="duplicate",source="arf"} 2`)
	testutil.Eventually(t, 20*time.Second, func() bool { return count() == 1 }, "the complaint was not counted: %d", count())

	// A rotated token: the next report (another recipient's complaint) is
	// deferred and stays queued, never bounced.
	writeToken("rotated-and-wrong-0123456789")
	second := bytes.Replace(report, []byte("Version: 1\n"), []byte("Version: 1\nOriginal-Rcpt-To: <second@example.com>\n"), 1)
	pf.submit(second)
	pf.waitLog("status=deferred", 1)
	if q := pf.queue(); len(q) != 1 || q[0].QueueName != "deferred" || !strings.Contains(q[0].Recipients[0].DelayReason, "stays queued") {
		t.Fatalf("queue after a refused token: %+v", q)
	}
	if n := pf.logCount("status=bounced"); n != 0 {
		t.Fatalf("%d bounces", n)
	}
	if n := count(); n != 1 {
		t.Fatalf("counted %d while the token was refused", n)
	}

	// Fixed and flushed: delivered, counted once.
	writeToken(aupd.token)
	pf.run("postqueue", "-f")
	pf.waitLog("status=sent", 4)
	aupd.wantMetrics(t, `aupd_ingest_events_total{result="accepted",source="arf"} 2`, `aupd_ingest_events_total{result="duplicate",source="arf"} 2`)
	testutil.Eventually(t, 20*time.Second, func() bool { return count() == 2 }, "the queued complaint was not counted: %d", count())
	if q := pf.queue(); len(q) != 0 {
		t.Fatalf("queue after the flush: %+v", q)
	}
	if n := pf.logCount("status=bounced"); n != 0 {
		t.Fatalf("%d bounces", n)
	}
}

type postfix struct {
	t    *testing.T
	conf string
	log  string
}

// startPostfix writes a private Postfix instance under dir: local
// submission only (sendmail, pickup), fbl@fbl.test routed to the pipe of
// deploy/postfix/fbl.master.cf.
func startPostfix(t *testing.T, dir, aupctl, server, tokenFile string) *postfix {
	t.Helper()
	conf, queue, data := filepath.Join(dir, "conf"), filepath.Join(dir, "queue"), filepath.Join(dir, "data")
	for _, d := range []string{conf, queue, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(data, postfixUID(t), -1); err != nil {
		t.Fatal(err)
	}
	p := &postfix{t: t, conf: conf, log: filepath.Join(dir, "maillog")}
	mainCF := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %s
data_directory = %s
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = %s
maillog_file_prefixes = %s
myhostname = fbl.test
mydomain = fbl.test
myorigin = fbl.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination = fbl.test
local_recipient_maps =
alias_maps =
alias_database =
smtputf8_enable = no
transport_maps = inline:{ {fbl@fbl.test=aupd-fbl:} }
default_transport = discard:test
local_transport = discard:test
# Retry deferred mail only when asked (postqueue -f): the test decides.
queue_run_delay = 1h
minimal_backoff_time = 1h
maximal_backoff_time = 2h
`, queue, data, p.log, dir)
	mcf, err := os.ReadFile("../../deploy/postfix/fbl.master.cf")
	if err != nil {
		t.Fatal(err)
	}
	var fbl []string
	for _, line := range strings.Split(string(mcf), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fbl = append(fbl, line)
	}
	pipe := strings.Join(fbl, "\n")
	for _, r := range [][2]string{
		{"/usr/bin/aupctl", aupctl}, {"http://127.0.0.1:9390", server},
		{"/etc/aupd/publisher.token", tokenFile}, {"user=aupd", "user=nobody"},
	} {
		if !strings.Contains(pipe, r[0]) {
			t.Fatalf("fbl.master.cf lacks %q:\n%s", r[0], pipe)
		}
		pipe = strings.ReplaceAll(pipe, r[0], r[1])
	}
	masterCF := `pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
# deploy/postfix/fbl.master.cf
` + pipe + "\n"
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), []byte(mainCF), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "master.cf"), []byte(masterCF), 0o644); err != nil {
		t.Fatal(err)
	}
	p.run("postfix", "check")
	p.run("postfix", "start")
	t.Cleanup(func() {
		_ = exec.Command("/usr/sbin/postfix", "-c", conf, "stop").Run()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("maillog:\n%s", b)
		}
	})
	return p
}

func postfixUID(t *testing.T) int {
	out, err := exec.Command("id", "-u", "postfix").Output()
	if err != nil {
		t.Fatalf("id -u postfix: %v", err)
	}
	var uid int
	if _, err := fmt.Sscan(string(out), &uid); err != nil {
		t.Fatal(err)
	}
	return uid
}

func (p *postfix) run(name string, args ...string) string {
	p.t.Helper()
	cmd := exec.Command("/usr/sbin/"+name, append([]string{"-c", p.conf}, args...)...)
	cmd.Stdin = nil
	out, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// submit hands a report to Postfix's sendmail with a null sender, as a
// feedback loop's report arrives.
func (p *postfix) submit(report []byte) {
	p.t.Helper()
	cmd := exec.Command("/usr/sbin/sendmail", "-C", p.conf, "-f", "<>", "fbl@fbl.test")
	cmd.Stdin = bytes.NewReader(report)
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("sendmail: %v\n%s", err, out)
	}
}

func (p *postfix) logCount(s string) int {
	b, _ := os.ReadFile(p.log)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "relay=aupd-fbl") && strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// waitLog waits for n delivery lines of the pipe with s in the mail log.
func (p *postfix) waitLog(s string, n int) {
	p.t.Helper()
	testutil.Eventually(p.t, 60*time.Second, func() bool { return p.logCount(s) >= n }, "%d %q lines in the mail log", n, s)
	if got := p.logCount(s); got != n {
		p.t.Fatalf("%d %q lines, want %d", got, s, n)
	}
}

// messageIDs are the Message-IDs cleanup logged, in order.
func (p *postfix) messageIDs() []string {
	b, _ := os.ReadFile(p.log)
	var ids []string
	for _, line := range strings.Split(string(b), "\n") {
		if _, id, ok := strings.Cut(line, "cleanup"); ok {
			if _, mid, ok := strings.Cut(id, "message-id="); ok {
				ids = append(ids, strings.TrimSpace(mid))
			}
		}
	}
	return ids
}

type queued struct {
	QueueName  string `json:"queue_name"`
	Recipients []struct {
		Address     string `json:"address"`
		DelayReason string `json:"delay_reason"`
	} `json:"recipients"`
}

// queue is what postqueue -j lists.
func (p *postfix) queue() []queued {
	p.t.Helper()
	var q []queued
	for _, line := range strings.Split(strings.TrimSpace(p.run("postqueue", "-j")), "\n") {
		if line == "" {
			continue
		}
		var e queued
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			p.t.Fatalf("postqueue -j: %v: %s", err, line)
		}
		q = append(q, e)
	}
	return q
}
