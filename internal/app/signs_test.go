package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// TestSignsEndToEnd: verdicts with a sender and Dovecot's reports, through
// a running aupd, end up in the account's sender tally and recent logins,
// as the API's account shows them: a verified login of an address in a
// company's domain starts the record, its failed logins follow, and
// guessed names and addresses outside every company get nothing. The
// report answers are the same for all of them.
func TestSignsEndToEnd(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	h := start(t, withIngestTokens(t, testConfig(t, ns.ClientURL(), prefix)))
	now := time.Now()
	alice := "alice@example.com"
	for i := range 2 {
		h.publish("aup.verdict.outbound", fmt.Appendf(nil, `{"id":"s-%d","time":%q,"direction":"outbound","account":%q,"verdict":"spam",`+
			`"sender":{"ip":"203.0.113.9","login":"alice"}}`, i, now.UTC().Format(time.RFC3339Nano), alice), "")
	}
	h.publish("aup.verdict.outbound", fmt.Appendf(nil, `{"id":"s-bad","time":%q,"direction":"outbound","account":%q,"verdict":"spam",`+
		`"sender":{"ip":"203.0.113.999"}}`, now.UTC().Format(time.RFC3339Nano), alice), "")
	h.drained()

	report := func(user string, success bool, remote string) string {
		t.Helper()
		body := fmt.Sprintf(`{"login":%q,"user":%q,"protocol":"imap","remote":%q,"pwhash":"ab1","success":%v,"policy_reject":false}`, user, user, remote, success)
		resp, err := http.Post("http://"+h.info.DovecotAddr+"/?command=report", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("report: %d %s", resp.StatusCode, b)
		}
		return string(b)
	}
	answers := map[string]bool{}
	answers[report(alice, true, "192.0.2.44")] = true
	answers[report(alice, false, "203.0.113.9")] = true
	answers[report("guess@example.com", false, "203.0.113.9")] = true
	answers[report("bob@elsewhere.test", true, "203.0.113.9")] = true
	if len(answers) != 1 {
		t.Fatalf("the reports were answered differently: %v", answers)
	}

	var a struct {
		Senders []store.Sender
		Logins  []store.Login
	}
	// The tally is written about once a second, apart from the counting:
	// the two verdicts may come in two batches and two writes, so wait
	// for both (a third would show in the check below).
	testutil.Eventually(t, 30*time.Second, func() bool {
		r := h.do(authed("GET", "http://"+h.info.HTTPAddr+"/api/v1/accounts/"+alice, tokAdminIngest))
		return r.status == 200 && json.Unmarshal(r.body, &a) == nil && len(a.Senders) > 0 && a.Senders[0].Count >= 2
	}, "the sender tally did not show both verdicts")
	if len(a.Senders) != 1 || a.Senders[0].IP != "203.0.113.9" || a.Senders[0].Login != "alice" || a.Senders[0].Count != 2 {
		t.Errorf("senders %+v", a.Senders)
	}
	if len(a.Logins) != 2 || a.Logins[0].Result != store.LoginFailed || a.Logins[1].Result != store.LoginOK || a.Logins[1].IP != "192.0.2.44" {
		t.Errorf("logins %+v", a.Logins)
	}
	if dl := h.deadLetters(); len(dl["invalid_field"]) != 1 {
		t.Errorf("dead letters %v, want the bad sender.ip", dl)
	}
	rdb, _ := testutil.Redis(t)
	for _, acct := range []string{"guess@example.com", "bob@elsewhere.test"} {
		if n := rdb.Exists(t.Context(), store.AccountKey(prefix, acct, "li")).Val(); n != 0 {
			t.Errorf("%s got a record of recent logins", acct)
		}
	}
	if m := h.metrics(); !strings.Contains(m, `aupd_dovecot_logins_recorded_total{result="recorded"} 2`) ||
		!strings.Contains(m, `aupd_dovecot_logins_recorded_total{result="not_recorded"} 2`) {
		t.Errorf("metrics: %s", grepLines(m, "aupd_dovecot_logins"))
	}
}

func authed(method, url, token string) *http.Request {
	req, _ := http.NewRequest(method, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}
