package ingest

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/events"
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
	}{
		{"json_with_message", http.Header{"Content-Type": {"application/json"}}, jsonBody, "outbound", "alice@globex.test", "virus", "Cheap meds"},
		{"json, inbound phish", http.Header{"Content-Type": {"application/json"}},
			`{"user":"unknown","qid":"Q2","action":"no action","score":1,"from":"carol@globex.test","rcpt":["x@elsewhere.example","dave@globex.test"],"symbols":[{"name":"PHISHED_OPENPHISH"}],"message_id":"m2"}`,
			"inbound", "carol@globex.test", "phish", ""},
		{"json, inbound from outside: against the sender, never the recipient", http.Header{"Content-Type": {"application/json"}},
			`{"user":"unknown","qid":"Q6","action":"reject","score":15,"from":"spammer@outside.example","rcpt":["carol@globex.test"],"symbols":[],"message_id":"m6"}`,
			"inbound", "spammer@outside.example", "spam", ""},
		{"default with meta headers", http.Header{"Content-Type": {"message/rfc822"}, "X-Rspamd-Action": {"reject"}, "X-Rspamd-User": {"alice@globex.test"},
			"X-Rspamd-Qid": {"Q3"}, "X-Rspamd-Score": {"16.2"}, "X-Rspamd-Rcpt": {`["bob@example.net"]`}, "X-Rspamd-Symbols": {`[{"name":"GTUBE"}]`}},
			msg, "outbound", "alice@globex.test", "spam", "Cheap meds"},
		{"login without a domain", http.Header{"Content-Type": {"application/json"}},
			`{"user":"Alice","qid":"Q5","action":"reject","score":20,"from":"alice@globex.test","rcpt":["bob@example.net"],"symbols":[]}`,
			"outbound", "alice@globex.test", "spam", ""},
		{"multipart", http.Header{"Content-Type": {`multipart/form-data; boundary="bb"`}},
			"--bb\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n" +
				`{"user":"unknown","qid":"Q4","action":"rewrite subject","score":9,"from":"carol@globex.test","rcpt":["dave@globex.test"],"symbols":[]}` +
				"\r\n--bb\r\nContent-Disposition: form-data; name=\"message\"; filename=\"message.eml\"\r\nContent-Type: message/rfc822\r\n\r\n" + msg + "\r\n--bb--\r\n",
			"inbound", "carol@globex.test", "spam", "Cheap meds"},
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
			// It is a valid contract event, and its id is stable.
			in, _ := EventInput(v)
			if _, err := events.ParseVerdict(in.Subject, in.Data, now, time.Minute); err != nil {
				t.Fatal(err)
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
	if _, err := r.Verdicts(now); err == nil || err.(*RefusedError).Reason != ReasonBadAuthedUser {
		t.Fatalf("login that is not the sender's: %v", err)
	}
	r, _ = ReadRspamd(http.Header{"Content-Type": {"application/json"}}, []byte(`{"user":"unknown","action":"reject","from":"","rcpt":["carol@globex.test"]}`))
	if _, err := r.Verdicts(now); err == nil || err.(*RefusedError).Reason != ReasonNoAccount {
		t.Fatalf("a bounce (no envelope sender): %v", err)
	}
}

// The schema in docs pins the same limits as the parser.
func TestSchemaMatchesContract(t *testing.T) {
	b, err := os.ReadFile("../../docs/verdict.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Required   []string
		Properties map[string]struct {
			MaxLength int `json:"maxLength"`
			Enum      []string
		}
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.Required, ",") != "id,time,direction,account,verdict" || s.Properties["id"].MaxLength != events.MaxIDLen ||
		s.Properties["account"].MaxLength != events.MaxAccount || len(s.Properties["verdict"].Enum) != 4 || len(s.Properties["direction"].Enum) != 3 {
		t.Fatalf("schema: %+v", s)
	}
}
