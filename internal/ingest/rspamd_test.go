package ingest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

func TestRspamdForms(t *testing.T) {
	msg := "From: alice@globex.test\r\nSubject: Offer\r\nMessage-ID: <m1@globex.test>\r\n\r\nCheap meds\r\n"
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	jsonBody := `{"ip":"192.0.2.1","user":"Alice@globex.test","qid":"Q1","subject":"Offer","action":"add header","rspamd_server":"mx1",` +
		`"score":7.5,"fuzzy":[],"rcpt":["bob@example.net"],"from":"alice@globex.test","symbols":[{"name":"BAYES_SPAM","score":5.1},{"name":"CLAM_VIRUS","score":10,"options":["Eicar"]}],` +
		`"message_id":"m1@globex.test","message":"` + base64.StdEncoding.EncodeToString([]byte(msg)) + `"}`
	for _, tc := range []struct {
		name    string
		header  http.Header
		body    string
		dir     string
		account string
		verdict string
		sample  string
		sender  *events.Sender
	}{
		{"json_with_message", http.Header{"Content-Type": {"application/json"}}, jsonBody, "outbound", "alice@globex.test", "virus", "Cheap meds",
			&events.Sender{IP: "192.0.2.1", Login: "Alice@globex.test"}},
		{"json, inbound phish", http.Header{"Content-Type": {"application/json"}},
			`{"user":"unknown","qid":"Q2","action":"no action","score":1,"from":"carol@globex.test","rcpt":["x@elsewhere.example","dave@globex.test"],"symbols":[{"name":"PHISHED_OPENPHISH"}],"message_id":"m2"}`,
			"inbound", "carol@globex.test", "phish", "", nil},
		{"json, inbound from outside: against the sender, never the recipient", http.Header{"Content-Type": {"application/json"}},
			`{"user":"unknown","ip":"::ffff:203.0.113.7","qid":"Q6","action":"reject","score":15,"from":"spammer@outside.example","rcpt":["carol@globex.test"],"symbols":[],"message_id":"m6"}`,
			"inbound", "spammer@outside.example", "spam", "", &events.Sender{IP: "203.0.113.7"}},
		{"default with meta headers", http.Header{"Content-Type": {"message/rfc822"}, "X-Rspamd-Action": {"reject"}, "X-Rspamd-User": {"alice@globex.test"},
			"X-Rspamd-Qid": {"Q3"}, "X-Rspamd-Score": {"16.2"}, "X-Rspamd-Rcpt": {`["bob@example.net"]`}, "X-Rspamd-Symbols": {`[{"name":"GTUBE"}]`},
			"X-Rspamd-Ip": {"2001:DB8::5"}},
			msg, "outbound", "alice@globex.test", "spam", "Cheap meds", &events.Sender{IP: "2001:db8::5", Login: "alice@globex.test"}},
		{"login without a domain", http.Header{"Content-Type": {"application/json"}},
			`{"user":"Alice","ip":"unknown","qid":"Q5","action":"reject","score":20,"from":"alice@globex.test","rcpt":["bob@example.net"],"symbols":[]}`,
			"outbound", "alice@globex.test", "spam", "", &events.Sender{Login: "Alice"}},
		{"multipart", http.Header{"Content-Type": {`multipart/form-data; boundary="bb"`}},
			"--bb\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n" +
				`{"user":"unknown","qid":"Q4","action":"rewrite subject","score":9,"from":"carol@globex.test","rcpt":["dave@globex.test"],"symbols":[]}` +
				"\r\n--bb\r\nContent-Disposition: form-data; name=\"message\"; filename=\"message.eml\"\r\nContent-Type: message/rfc822\r\n\r\n" + msg + "\r\n--bb--\r\n",
			"inbound", "carol@globex.test", "spam", "Cheap meds", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ReadRspamd(tc.header, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			vs, err := r.Verdicts(now)
			if err != nil || len(vs) != 1 {
				t.Fatalf("%v %v", vs, err)
			}
			v := vs[0]
			if string(v.Direction) != tc.dir || v.Account != tc.account || string(v.Verdict) != tc.verdict || !strings.Contains(v.Message.Raw, tc.sample) {
				t.Fatalf("%+v", v)
			}
			if !reflect.DeepEqual(v.Sender, tc.sender) {
				t.Fatalf("sender %+v, want %+v", v.Sender, tc.sender)
			}
			// It is a valid contract event, sender and all, and its id is
			// stable.
			in, _ := EventInput(v)
			parsed, err := events.ParseVerdict(in.Subject, in.Data, now, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(parsed.Sender, tc.sender) {
				t.Fatalf("sender as published %+v, want %+v", parsed.Sender, tc.sender)
			}
			r2, _ := ReadRspamd(tc.header, []byte(tc.body))
			vs2, _ := r2.Verdicts(now.Add(time.Minute))
			if vs2[0].ID != v.ID {
				t.Fatalf("id changed: %s %s", v.ID, vs2[0].ID)
			}
		})
	}
	// rspamd says "undef" for a missing queue id and Message-ID: the id
	// then comes from the message, so two messages never share one.
	ids := map[string]bool{}
	for _, body := range []string{"Subject: a\r\n\r\none\r\n", "Subject: b\r\n\r\ntwo\r\n"} {
		r, err := ReadRspamd(http.Header{"Content-Type": {"message/rfc822"}, "X-Rspamd-Action": {"reject"}, "X-Rspamd-User": {"alice@globex.test"},
			"X-Rspamd-Qid": {"undef"}}, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		vs, err := r.Verdicts(now)
		if err != nil {
			t.Fatal(err)
		}
		ids[vs[0].ID] = true
	}
	if len(ids) != 2 {
		t.Fatalf("messages without queue id and Message-ID share an id: %v", ids)
	}
	if _, err := ReadRspamd(http.Header{"Content-Type": {"text/html"}}, []byte("<p>")); err == nil {
		t.Fatal("html accepted")
	}
	r, _ := ReadRspamd(http.Header{"Content-Type": {"application/json"}}, []byte(`{"user":"bob","from":"alice@globex.test","action":"reject"}`))
	if _, err := r.Verdicts(now); refusal(err) != ReasonBadAuthedUser {
		t.Fatalf("login that is not the sender's: %v", err)
	}
	r, _ = ReadRspamd(http.Header{"Content-Type": {"application/json"}}, []byte(`{"user":"unknown","action":"reject","from":"","rcpt":["carol@globex.test"]}`))
	if _, err := r.Verdicts(now); refusal(err) != ReasonNoAccount {
		t.Fatalf("a bounce (no envelope sender): %v", err)
	}
}

// TestRspamdID: every scan of the same message has the same id, whatever
// its queue id and trace headers (the MTA retries it); messages that share
// a Message-ID but not their recipients or content do not.
func TestRspamdID(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	const big = "Subject: Offer\r\nMessage-ID: <m1@globex.test>\r\n\r\nCheap meds\r\n"
	id := func(qid, received, rcpt, msg string) string {
		t.Helper()
		h := http.Header{"Content-Type": {"message/rfc822"}, "X-Rspamd-Action": {"reject"}, "X-Rspamd-User": {"alice@globex.test"},
			"X-Rspamd-Qid": {qid}, "X-Rspamd-From": {"alice@globex.test"}, "X-Rspamd-Rcpt": {rcpt}}
		r, err := ReadRspamd(h, []byte(received+msg))
		if err != nil {
			t.Fatal(err)
		}
		vs, err := r.Verdicts(now)
		if err != nil {
			t.Fatal(err)
		}
		return vs[0].ID
	}
	const rcpt = `["bob@example.net","carol@example.net"]`
	first := id("Q1", "Received: from a by mx id Q1\r\n", rcpt, big)
	for _, tc := range []struct {
		name, qid, received, rcpt, msg string
		same                           bool
	}{
		{"a retry: new queue id and trace header", "Q2", "Received: from a by mx id Q2; Tue, 1 Dec\r\n", rcpt, big, true},
		{"recipients in another order and case", "Q3", "", `["Carol@Example.NET","bob@example.net","bob@example.net"]`, big, true},
		{"the same Message-ID to other recipients", "Q4", "", `["dave@example.net"]`, big, false},
		{"the same Message-ID, another body", "Q5", "", rcpt, strings.Replace(big, "Cheap meds", "Cheap pills", 1), false},
		{"the same Message-ID, another subject", "Q6", "", rcpt, strings.Replace(big, "Offer", "Offer 2", 1), false},
	} {
		if got := id(tc.qid, tc.received, tc.rcpt, tc.msg); (got == first) != tc.same {
			t.Errorf("%s: id %s, first %s, want same %v", tc.name, got, first, tc.same)
		}
	}
	// Without a Message-ID a retry cannot be told from a new copy: each
	// queue id counts.
	noID := strings.Replace(big, "Message-ID: <m1@globex.test>\r\n", "", 1)
	if a, b := id("Q1", "", rcpt, noID), id("Q2", "", rcpt, noID); a == b || a != id("Q1", "Received: x\r\n", rcpt, noID) {
		t.Errorf("without a Message-ID: ids %s %s", a, b)
	}
}

func TestPhishSymbol(t *testing.T) {
	for sym, want := range map[string]rules.Verdict{
		"PHISHING": rules.Phish, "PHISHED_OPENPHISH": rules.Phish, "PHISHED_PHISHTANK": rules.Phish, "PHISHED_GENERIC_SERVICE": rules.Phish,
		"DBL_PHISH": rules.Phish, "DBL_ABUSE_PHISH": rules.Phish, "HACKED_WP_PHISHING": rules.Phish, "VADE_PHISHING": rules.Phish,
		"phishing": rules.Phish, "PHISHED_WHITELISTED": rules.Ham, "BAYES_HAM": rules.Ham, "CLAM_VIRUS": rules.Virus,
	} {
		r := &Rspamd{Action: "no action", Symbols: []string{sym, "R_SPF_ALLOW"}}
		if got := r.VerdictOf(); got != want {
			t.Errorf("%s at no action: %s, want %s", sym, got, want)
		}
	}
	// The shipped exporter selects what VerdictOf calls phish.
	conf, err := os.ReadFile("../../deploy/rspamd/local.d/metadata_exporter.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append([]string{"PHISHED_", "PHISHED_WHITELISTED"}, PhishSymbols...) {
		if !strings.Contains(string(conf), "'"+s+"'") {
			t.Errorf("deploy/rspamd/local.d/metadata_exporter.conf does not name %s", s)
		}
	}
}

// The schema in docs pins the same limits as the parser.
func TestSchemaMatchesContract(t *testing.T) {
	b, err := os.ReadFile("../../docs/verdict.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	type prop struct {
		Type       string
		MaxLength  int `json:"maxLength"`
		Enum       []string
		Properties map[string]prop
	}
	var s struct {
		Required   []string
		Properties map[string]prop
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.Required, ",") != "id,time,direction,account,verdict" || s.Properties["id"].MaxLength != events.MaxIDLen ||
		s.Properties["account"].MaxLength != events.MaxAccount || len(s.Properties["verdict"].Enum) != 4 || len(s.Properties["direction"].Enum) != 3 {
		t.Fatalf("schema: %+v", s)
	}
	// The optional sender: an object of three strings, with the decoder's
	// bounds.
	sender := s.Properties["sender"]
	if sender.Type != "object" || len(sender.Properties) != 3 || sender.Properties["ip"].Type != "string" ||
		sender.Properties["login"].MaxLength != events.MaxLogin || sender.Properties["helo"].MaxLength != events.MaxHelo {
		t.Fatalf("schema's sender: %+v", sender)
	}
	for _, key := range []string{"ip", "login", "helo"} {
		data := fmt.Sprintf(`{"id":"x","time":"2026-11-21T11:00:00Z","direction":"outbound","account":"a@example.com","verdict":"spam","sender":{%q:5}}`, key)
		_, err := events.ParseVerdict("aup.verdict.outbound", []byte(data), time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC), time.Minute)
		if ie, ok := events.AsInvalid(err); !ok || ie.Field != "sender."+key {
			t.Errorf("sender.%s of the wrong type: %v", key, err)
		}
	}
}

// refusal is the reason of a RefusedError, "" for any other error.
func refusal(err error) string {
	var re *RefusedError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}
