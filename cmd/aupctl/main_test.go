package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/api"
	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

const (
	adminToken = "ctl-admin-token"
	viewToken  = "ctl-viewer-token"
)

type jsPublisher struct{ js jetstream.JetStream }

func (p jsPublisher) PublishAccountEvent(ctx context.Context, ev *events.AccountEvent, data []byte) error {
	_, err := p.js.Publish(ctx, events.AccountSubjectPrefix+ev.Type, data, jetstream.WithMsgID(ev.ID))
	return err
}

type notices struct{ evidence map[string][]byte }

func (n notices) NoticeState(context.Context, string, string) (any, bool, error) {
	return map[string]string{"state": "sent"}, true, nil
}

func (n notices) Evidence(_ context.Context, account, id string) ([]byte, bool, error) {
	b, ok := n.evidence[account+"/"+id]
	return b, ok, nil
}

type harness struct {
	t      *testing.T
	url    string
	store  *store.Store
	stream jetstream.Stream
	ev     map[string][]byte
}

// start runs the admin API on real Redis and a real in-process NATS.
func start(t *testing.T) *harness {
	rdb, prefix := testutil.Redis(t)
	ns := testutil.NATSServer(t, "")
	nc := testutil.NATS(t, ns.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "AUP_ACCOUNT", Subjects: []string{"aup.account.>"}})
	if err != nil {
		t.Fatal(err)
	}
	s := store.New(rdb, prefix)
	dir, err := companies.New(rdb, prefix, []companies.Company{{ID: "acme", Domains: []string{"example.com"}, AbuseContact: "abuse@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	ev := map[string][]byte{}
	h, err := api.New(api.Options{
		Store: s, Companies: dir, Publisher: jsPublisher{js}, Notices: notices{ev}, Cap: 100,
		Threshold: func(string) int { return 10 },
		Auth: auth.Config{Tokens: []auth.TokenConfig{
			{Name: "ops-admin", Hash: auth.HashToken(adminToken), Role: auth.RoleAdmin},
			{Name: "dashboard", Hash: auth.HashToken(viewToken), Role: auth.RoleViewer},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &harness{t: t, url: srv.URL, store: s, stream: st, ev: ev}
}

// ctl runs aupctl and returns its exit code, stdout and stderr.
func (h *harness) ctl(token string, args ...string) (int, string, string) {
	h.t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"--server", h.url, "--token", token}, args...)
	code := runIn(full, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func (h *harness) want(code int, token string, args ...string) string {
	h.t.Helper()
	got, out, errs := h.ctl(token, args...)
	if got != code {
		h.t.Fatalf("aupctl %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, got, code, out, errs)
	}
	return out
}

func (h *harness) events() []events.AccountEvent {
	h.t.Helper()
	ctx := context.Background()
	info, err := h.stream.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []events.AccountEvent
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := h.stream.GetMsg(ctx, seq)
		if err != nil {
			h.t.Fatal(err)
		}
		var ev events.AccountEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func TestAdminSession(t *testing.T) {
	h := start(t)
	alice := "alice@example.com"

	out := h.want(0, adminToken, "lock", alice, "--reason", "suspected compromise")
	if !strings.Contains(out, "lock done") || !strings.Contains(out, "status locked") {
		t.Fatalf("lock: %q", out)
	}
	out = h.want(0, adminToken, "lock", alice, "--reason", "again")
	if !strings.Contains(out, "nothing to change") {
		t.Fatalf("second lock: %q", out)
	}
	out = h.want(0, adminToken, "status", alice)
	for _, s := range []string{"alice@example.com", "locked", "ops-admin", "suspected compromise", "acme"} {
		if !strings.Contains(out, s) {
			t.Fatalf("status lacks %q:\n%s", s, out)
		}
	}
	// Flags may come before the address, global flags anywhere.
	h.want(0, adminToken, "suspend", "--service", "send,imap", alice, "--reason", "spam run")
	out = h.want(0, adminToken, "--json", "status", alice)
	var a api.Account
	if err := json.Unmarshal([]byte(out), &a); err != nil || len(a.Suspended) != 2 {
		t.Fatalf("status --json: %v %s", err, out)
	}
	out = h.want(0, adminToken, "list", "--suspended", "--company", "acme")
	if !strings.Contains(out, alice) || !strings.Contains(out, "send,imap") || !strings.HasPrefix(out, "ACCOUNT") {
		t.Fatalf("list: %s", out)
	}
	out = h.want(0, viewToken, "licences", "acme", "--json")
	var lic store.Licences
	if err := json.Unmarshal([]byte(out), &lic); err != nil || lic.Total != 1 || lic.Suspended != 1 {
		t.Fatalf("licences: %s", out)
	}

	// Delete is refused while suspended: exit 5, with the reason why.
	code, _, errs := h.ctl(adminToken, "delete", alice, "--reason", "left")
	if code != exitConflict || !strings.Contains(errs, "reinstate") {
		t.Fatalf("delete while suspended: %d %s", code, errs)
	}
	h.want(0, adminToken, "reinstate", alice, "--reason", "cleaned")
	h.want(0, adminToken, "unlock", alice, "--reason", "password changed")
	h.want(0, adminToken, "maintenance", alice, "--reason", "restore")
	h.want(exitConflict, adminToken, "unlock", alice, "--reason", "x")
	h.want(0, adminToken, "activate", alice, "--reason", "restore done")
	h.want(0, adminToken, "close", alice, "--reason", "contract ended")

	out = h.want(0, adminToken, "history", alice)
	for _, s := range []string{"TIME", "VIA", "token", "suspend", "send,imap", "spam run", "reinstate", "closed", "contract ended"} {
		if !strings.Contains(out, s) {
			t.Fatalf("history lacks %q:\n%s", s, out)
		}
	}
	if n := strings.Count(out, "locked"); n != 1 {
		t.Fatalf("lock recorded %d times:\n%s", n, out)
	}
	h.want(0, adminToken, "delete", alice, "--reason", "contract ended")
	h.want(exitNotFound, adminToken, "status", alice)

	// Every change was published with old and new state, actor and reason.
	var got []string
	for _, ev := range h.events() {
		if ev.Account != alice || ev.Actor != "ops-admin" || ev.Reason != rules.ReasonAdmin || ev.Note == "" || ev.Old == nil {
			t.Fatalf("event %+v", ev)
		}
		to := "-"
		if ev.New != nil {
			to = ev.New.Status + "/" + strings.Join(ev.New.Suspended, ",")
		}
		got = append(got, ev.Type+":"+ev.Old.Status+"/"+strings.Join(ev.Old.Suspended, ",")+">"+to)
	}
	want := []string{
		"updated:active/>active/",
		"status_changed:active/>locked/",
		"suspended:locked/>locked/send,imap",
		"reinstated:locked/send,imap>locked/",
		"status_changed:locked/>active/",
		"status_changed:active/>maintenance/",
		"status_changed:maintenance/>active/",
		"status_changed:active/>closed/",
		"deleted:closed/>-",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestEvidenceDecideCompanies(t *testing.T) {
	h := start(t)
	now := time.Now()
	var items []store.Item
	for i := range 3 {
		items = append(items, store.Item{ID: string(rune('a' + i)), Time: now, Kind: rules.KindOf(rules.Outbound, rules.Spam), Counting: true})
	}
	res, err := h.store.Ingest(context.Background(), []store.Batch{{Account: "bob@example.com", Company: "acme", Threshold: 2, Cap: 100, Action: rules.ActionSuspend, Items: items}}, store.IngestParams{Window: 24 * time.Hour, Skew: 5 * time.Minute, Now: now, NewID: func() string { return store.NewID(now) }})
	if err != nil || res[0].ID == "" {
		t.Fatal(err, res)
	}
	h.ev["bob@example.com/"+res[0].ID] = []byte("evidence body\n")
	if out := h.want(0, viewToken, "evidence", "bob@example.com", res[0].ID); out != "evidence body\n" {
		t.Fatalf("evidence: %q", out)
	}
	file := filepath.Join(t.TempDir(), "evidence.txt")
	h.want(0, viewToken, "evidence", "bob@example.com", res[0].ID, "--out", file)
	if b, _ := os.ReadFile(file); string(b) != "evidence body\n" {
		t.Fatalf("evidence file: %q", b)
	}
	h.want(exitNotFound, viewToken, "evidence", "bob@example.com", "nosuchid")
	out := h.want(0, viewToken, "status", "bob@example.com")
	if !strings.Contains(out, "Last AUP suspend") || !strings.Contains(out, "in force") || !strings.Contains(out, "Notice:") || !strings.Contains(out[strings.Index(out, "Notice:"):], "sent") {
		t.Fatalf("status after AUP suspension:\n%s", out)
	}
	if out := h.want(exitDenied, viewToken, "decide", "bob@example.com", "send_smtp"); !strings.Contains(out, "deny (send_suspended)") {
		t.Fatalf("decide: %s", out)
	}
	if out := h.want(0, viewToken, "decide", "bob@example.com", "login_imap"); !strings.Contains(out, "allow") {
		t.Fatalf("decide: %s", out)
	}
	if out := h.want(0, viewToken, "companies"); !strings.Contains(out, "acme") || !strings.Contains(out, "example.com") {
		t.Fatalf("companies: %s", out)
	}
	if out := h.want(0, viewToken, "company", "acme"); !strings.Contains(out, `"abuse_contact"`) {
		t.Fatalf("company: %s", out)
	}
	h.want(exitNotFound, viewToken, "company", "nope")
	h.want(0, adminToken, "set", "fwd@example.com", "--type", "forward", "--reason", "alias")
	h.want(exitConflict, adminToken, "suspend", "fwd@example.com", "--service", "send", "--reason", "x")
}

// TestStatusUnprovisioned: an address aupd counts verdicts for but holds
// no record of is shown with its counts and threshold, and stays without
// a record; an address never seen is not found.
func TestStatusUnprovisioned(t *testing.T) {
	h := start(t)
	now := time.Now()
	var items []store.Item
	for i := range 7 {
		dir := rules.Outbound
		if i >= 5 {
			dir = rules.Complaint
		}
		items = append(items, store.Item{ID: fmt.Sprint("v", i), Time: now, Kind: rules.KindOf(dir, rules.Spam), Counting: true})
	}
	res, err := h.store.Ingest(context.Background(), []store.Batch{{Account: "seven@example.com", Company: "acme", Threshold: 10, Cap: 100, Action: rules.ActionSuspend, Items: items}}, store.IngestParams{Window: 24 * time.Hour, Skew: 5 * time.Minute, Now: now, NewID: func() string { return store.NewID(now) }})
	if err != nil || res[0].Err != nil || res[0].ID != "" {
		t.Fatal(err, res)
	}
	out := h.want(0, viewToken, "status", "seven@example.com")
	for _, s := range []string{"not provisioned; 7 of 10 counted", "7 of 10 (outbound 5, inbound 0, complaint 2)", "acme\n"} {
		if !strings.Contains(out, s) {
			t.Fatalf("status lacks %q:\n%s", s, out)
		}
	}
	if a, err := h.store.Account(context.Background(), "seven@example.com"); err != nil || a.Exists {
		t.Fatalf("status made a record: %+v %v", a, err)
	}
	h.want(exitNotFound, viewToken, "status", "never@example.com")
}

func TestExitCodes(t *testing.T) {
	h := start(t)
	h.want(exitRefused, "wrong-token", "status", "a@example.com")
	h.want(exitRefused, "", "status", "a@example.com")
	h.want(exitRefused, viewToken, "lock", "a@example.com", "--reason", "x")
	h.want(exitUsage, adminToken, "lock", "a@example.com")
	h.want(exitUsage, adminToken, "lock")
	h.want(exitUsage, adminToken, "frobnicate", "a@example.com")
	h.want(exitUsage, adminToken, "suspend", "a@example.com", "--service", "ftp", "--reason", "x")
	h.want(exitUsage, adminToken, "suspend", "a@example.com", "--reason", "x")
	h.want(exitUsage, adminToken, "status", "not-an-address")
	h.want(exitUsage, adminToken, "lock", "a@example.com", "--reason", "x", "--bogus")
	h.want(exitNotFound, adminToken, "status", "nobody@example.com")

	var out, errb bytes.Buffer
	if code := runIn([]string{"--server", "http://127.0.0.1:1", "--token", "x", "status", "a@example.com"}, nil, &out, &errb); code != exitError {
		t.Fatalf("unreachable server: exit %d", code)
	}
	if code := runIn([]string{"--help"}, nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "Exit codes") {
		t.Fatalf("help: %d", code)
	}
	if code := runIn(nil, nil, &out, &errb); code != exitUsage {
		t.Fatalf("no args: %d", code)
	}

	// The server URL and token from the environment.
	t.Setenv("AUPCTL_SERVER", h.url)
	t.Setenv("AUPCTL_TOKEN", adminToken)
	out.Reset()
	if code := runIn([]string{"lock", "env@example.com", "--reason", "x"}, nil, &out, &errb); code != 0 {
		t.Fatalf("env config: exit %d %s", code, errb.String())
	}
}

func TestHashToken(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runIn([]string{"hash-token", "--stdin"}, strings.NewReader("abc\n"), &out, &errb); code != 0 {
		t.Fatalf("exit %d %s", code, errb.String())
	}
	if got := strings.TrimSpace(out.String()); got != auth.HashToken("abc") {
		t.Fatalf("hash %q", got)
	}
	out.Reset()
	if code := runIn([]string{"hash-token"}, nil, &out, &errb); code != 0 {
		t.Fatal(code)
	}
	generatedToken(t, out.String())
}

// TestOfflineCommandsNeedNoTokenFile: AUPCTL_TOKEN_FILE names a file that
// does not exist yet while the first token is made (docs/aupctl.md). The
// offline commands work; the token they make goes into the file; a
// command that talks to aupd still says that the file is missing.
func TestOfflineCommandsNeedNoTokenFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "aupctl-token")
	t.Setenv("AUPCTL_TOKEN_FILE", file)
	t.Setenv("AUPCTL_CONFIG", "")
	t.Setenv("AUPCTL_TOKEN", "")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no settings file of this machine's user

	var out, errb bytes.Buffer
	ctl := func(stdin io.Reader, args ...string) int {
		out.Reset()
		errb.Reset()
		return runIn(args, stdin, &out, &errb)
	}
	if code := ctl(nil, "--server", "http://127.0.0.1:1", "status", "a@example.com"); code != exitUsage || !strings.Contains(errb.String(), "token file") {
		t.Fatalf("status with a missing token file: exit %d, %q", code, errb.String())
	}
	for _, args := range [][]string{{"version"}, {"completion", "bash"}, {"hash-token", "--stdin"}} {
		if code := ctl(strings.NewReader("abc\n"), args...); code != 0 {
			t.Fatalf("%s with a missing token file: exit %d, %q", args, code, errb.String())
		}
	}

	// The first token, as docs/aupctl.md makes it.
	if code := ctl(nil, "hash-token"); code != 0 {
		t.Fatalf("hash-token with a missing token file: exit %d, %q", code, errb.String())
	}
	tok := generatedToken(t, out.String())
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if code := ctl(f, "hash-token", "--stdin"); code != 0 || strings.TrimSpace(out.String()) != auth.HashToken(tok) {
		t.Fatalf("hash of the token file: exit %d, %q, want %s", code, out.String(), auth.HashToken(tok))
	}
	// Now the file is read: the request fails at the unreachable server.
	if code := ctl(nil, "--server", "http://127.0.0.1:1", "status", "a@example.com"); code != exitError {
		t.Fatalf("status with the token file: exit %d, %q", code, errb.String())
	}
}

// TestNoticeLineSaysWhereAndWhy: status says where a redirected notice
// went and why, and does not repeat a reason that is the error already.
func TestNoticeLineSaysWhereAndWhy(t *testing.T) {
	note := "notice sent to the provider's fallback contact because the company's abuse contact is this mailbox"
	got := noticeLine(map[string]any{"state": "sent", "recipient": "fallback@provider.test", "attempts": 1, "recipient_reason": "contact_is_account", "recipient_note": note})
	if want := "sent to fallback@provider.test, 1 attempt(s) (" + note + ")"; got != want {
		t.Errorf("noticeLine = %q, want %q", got, want)
	}
	got = noticeLine(map[string]any{"state": "failed", "attempts": 0, "last_error": "notice not sent: x", "recipient_note": "notice not sent: x"})
	if want := "failed, 0 attempt(s), last error: notice not sent: x"; got != want {
		t.Errorf("noticeLine = %q, want %q", got, want)
	}
}

// TestNote: aupctl note adds a case note that history shows with its
// author; the text is required, a viewer is refused, and an address aupd
// holds no record of gets none.
func TestNote(t *testing.T) {
	h := start(t)
	bob := "bob@example.com"
	h.want(0, adminToken, "lock", bob, "--reason", "suspected compromise")
	out := h.want(0, adminToken, "note", bob, "--text", "called the user,\nnew password set")
	if !strings.Contains(out, bob+": note added by ops-admin") {
		t.Fatalf("note: %q", out)
	}
	out = h.want(0, adminToken, "history", bob)
	if !strings.Contains(out, "note") || !strings.Contains(out, "called the user, new password set") {
		t.Fatalf("history lacks the note:\n%s", out)
	}
	h.want(exitUsage, adminToken, "note", bob)
	h.want(exitUsage, adminToken, "note", bob, "--text", strings.Repeat("x", 1001))
	h.want(exitRefused, viewToken, "note", bob, "--text", "x")
	h.want(exitNotFound, adminToken, "note", "nobody@example.com", "--text", "x")
	out = h.want(0, adminToken, "--json", "history", bob)
	if n := strings.Count(out, `"action": "note"`) + strings.Count(out, `"action":"note"`); n != 1 {
		t.Fatalf("%d notes in the history, want 1:\n%s", n, out)
	}
}

// generatedToken reads hash-token's output and checks that its hash is
// the token's.
func generatedToken(t *testing.T, out string) string {
	t.Helper()
	var tok, hash string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "token: "); ok {
			tok = v
		}
		if v, ok := strings.CutPrefix(l, "hash:  "); ok {
			hash = v
		}
	}
	if tok == "" || hash != auth.HashToken(tok) {
		t.Fatalf("generated %q", out)
	}
	return tok
}

// TestStatusShowsSigns: status lists who sent the counted messages and
// the recent logins, which the API gives with one account.
func TestStatusShowsSigns(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	bob := "bob@example.com"
	h.want(0, adminToken, "lock", bob, "--reason", "suspected compromise")
	now := time.Now()
	snd := h.store.NewSenders(0)
	snd.Add(bob, "203.0.113.9", "bob@example.com", now.Add(-time.Hour))
	snd.Add(bob, "203.0.113.9", "bob@example.com", now.Add(-time.Minute))
	if err := snd.Flush(ctx, 24*time.Hour, time.Time{}); err != nil {
		t.Fatal(err)
	}
	lim := store.LoginLimits{Keep: 20, Retention: 7 * 24 * time.Hour}
	if _, err := h.store.RecordLogin(ctx, bob, store.LoginReport{Time: now, Result: store.LoginFailed, Protocol: "imap", IP: "198.51.100.4"}, false, lim); err != nil {
		t.Fatal(err)
	}
	out := h.want(0, viewToken, "status", bob)
	for _, s := range []string{"Sent by:", "203.0.113.9 login bob@example.com: at least 2", "Recent logins:", "failed imap from 198.51.100.4: 1"} {
		if !strings.Contains(out, s) {
			t.Fatalf("status lacks %q:\n%s", s, out)
		}
	}
	var a api.Account
	if err := json.Unmarshal([]byte(h.want(0, viewToken, "--json", "status", bob)), &a); err != nil || len(a.Senders) != 1 || len(a.Logins) != 1 {
		t.Fatalf("status --json: %v %+v %+v", err, a.Senders, a.Logins)
	}
}

// TestOutputJSON: -o json (and --output json, --json) makes every
// command that prints a result print one JSON document, and -o table
// keeps the tables; anything else is a usage error.
func TestOutputJSON(t *testing.T) {
	h := start(t)
	alice := "alice@example.com"
	h.want(0, adminToken, "set", alice, "--reason", "provision")
	h.want(0, adminToken, "suspend", alice, "--service", "send", "--reason", "spam run")
	for _, args := range [][]string{
		{"status", alice}, {"history", alice}, {"list"}, {"companies"}, {"company", "acme"},
		{"licences", "acme"}, {"decide", alice, "login_imap"}, {"note", alice, "--text", "called the user"},
		{"reinstate", alice, "--service", "send", "--reason", "password changed"},
		{"lock", alice, "--reason", "compromised"}, {"version"}, {"hash-token"},
	} {
		for _, flagv := range [][]string{{"-o", "json"}, {"--output=json"}, {"--json"}} {
			code, out, errs := h.ctl(adminToken, append(append([]string{}, flagv...), args...)...)
			if code != 0 {
				t.Fatalf("aupctl %v %v: exit %d: %s", flagv, args, code, errs)
			}
			if !json.Valid([]byte(out)) {
				t.Errorf("aupctl %v %v printed no JSON:\n%s", flagv, args, out)
			}
			if args[0] == "reinstate" || args[0] == "lock" || args[0] == "note" {
				break // a change: once is enough
			}
		}
	}
	if out := h.want(0, adminToken, "-o", "table", "status", alice); json.Valid([]byte(out)) || !strings.Contains(out, "Account:") {
		t.Errorf("-o table printed:\n%s", out)
	}
	h.want(2, adminToken, "-o", "yaml", "status", alice)
	h.want(2, adminToken, "--json", "-o", "table", "status", alice)
}
