package arf_test

import (
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/arf"
	"github.com/aupd/aupd/internal/ingest"
)

// report builds a report in the shape real feedback loops send: header
// lines, a boundary, the parts, with the line ending le.
func report(header, boundary string, parts []string, le string) string {
	var b strings.Builder
	b.WriteString(header + "\n\n")
	b.WriteString("This is a multi-part message in MIME format.\n\n")
	for _, p := range parts {
		b.WriteString("--" + boundary + "\n" + p + "\n")
	}
	b.WriteString("--" + boundary + "--\n")
	return strings.ReplaceAll(b.String(), "\n", le)
}

const original = `Return-Path: <mallory@example.org>
Received: from [192.0.2.22] by smtp.example.org; Tue, 1 Dec 2026 07:55:00 +0000
From: Mallory <mallory@example.org>
To: victim@mail.example
Subject: Cheap meds
Message-ID: <cheap-1@example.org>
Date: Tue, 1 Dec 2026 07:55:00 +0000

Buy now, cheap meds.
`

var cases = []struct {
	name    string
	report  string
	reason  string // refusal reason; "" accepted
	account string
	verdict string
	arrival string
	sample  string // in the sample
}{
	{name: "rfc5965 B.1 (minimal)", report: mustRead("testdata/rfc5965-b1.eml"), account: "somespammer@example.net", verdict: "spam", sample: "Spam Spam Spam"},
	{name: "rfc5965 B.2 (all fields, headers only)", report: report(`From: <arf-daemon@example.com>
To: <abuse@example.org>
Subject: FW: Cheap meds
Message-ID: <report-b2@example.com>
Date: Tue, 1 Dec 2026 08:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b2"`, "b2", []string{
		"Content-Type: text/plain; charset=\"US-ASCII\"\n\nAn abuse report.\n",
		`Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <mallory@example.org>
Original-Rcpt-To: <victim@mail.example>
Arrival-Date: Tue, 1 Dec 2026 07:56:00 +0000
Reporting-MTA: dns; mail.example.com
Source-IP: 192.0.2.1
Authentication-Results: mail.example.com; spf=fail smtp.mail=mallory@example.org
Reported-Domain: example.org
Reported-Uri: http://example.org/meds
`,
		"Content-Type: text/rfc822-headers\n\n" + strings.SplitN(original, "\n\n", 2)[0] + "\n",
	}, "\r\n"), account: "mallory@example.org", verdict: "spam", arrival: "2026-12-01T07:56:00Z", sample: "Subject: Cheap meds"},
	{name: "yahoo shape (quoted type, folded, redacted recipient)", report: report(`Received: from feedback.example.net by mx.example.org; Tue, 1 Dec 2026 08:01:00 +0000
From: staff@feedback.example.net
To: fbl@example.org
Subject: Email Feedback Report for IP 192.0.2.22
Message-ID: <yahoo-like-1@feedback.example.net>
Date: Tue, 1 Dec 2026 08:01:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report;
	report-type="feedback-report";
	boundary="----=Part_77_1"`, "----=Part_77_1", []string{
		"Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\nThis is an email abuse report for an email message received from IP 192.0.2.22.\n",
		"Content-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: Yahoo!-Mail-Feedback/2.0\nVersion: 0.1\nOriginal-Mail-From: <mallory@example.org>\nOriginal-Rcpt-To: redacted@feedback.example.net\nReceived-Date: Tue, 1 Dec 2026 07:57:00 +0000\nSource-IP: 192.0.2.22\nReported-Domain: example.org\nAuthentication-Results: mta.feedback.example.net  from=example.org; domainkeys=neutral; dkim=pass\n",
		"Content-Type: message/rfc822\n\n" + strings.Replace(original, "victim@mail.example", "redacted@feedback.example.net", 1),
	}, "\r\n"), account: "mallory@example.org", verdict: "spam", arrival: "2026-12-01T07:57:00Z", sample: "Buy now"},
	{name: "return-path/microsoft shape (boundary first, binary, 8bit)", report: report(`Content-Transfer-Encoding: binary
Content-Type: multipart/report; boundary="_----------=_1700000000"; report-type="feedback-report"
MIME-Version: 1.0
Date: Tue, 1 Dec 2026 08:02:00 +0000
Subject: Abuse Report
To: fbl@example.org
From: staff@fbl.example.com
Message-Id: <rp-like-1@fbl.example.com>`, "_----------=_1700000000", []string{
		"Content-Disposition: inline\nContent-Transfer-Encoding: 7bit\nContent-Type: text/plain\n\nThis is an email abuse report.\n",
		"Content-Disposition: inline\nContent-Transfer-Encoding: 7bit\nContent-Type: message/feedback-report\n\nUser-Agent: ReturnPathFBL/2.0\nAbuse-Type: complaint\nArrival-Date: Tue, 1 Dec 2026 07:58:00 +0000\nFeedback-Type: abuse\nVersion: 1\nSource-IP: 192.0.2.22\nOriginal-Mail-From: mallory@example.org\n",
		"Content-Disposition: inline\nContent-Transfer-Encoding: 8bit\nContent-Type: message/rfc822\n\n" + strings.Replace(original, "Buy now", "Achetez maintenant, très peu cher", 1),
	}, "\n"), account: "mallory@example.org", verdict: "spam", arrival: "2026-12-01T07:58:00Z", sample: "très peu cher"},
	{name: "base64 original, fraud", report: report(`From: fbl@isp.example
To: fbl@example.org
Message-ID: <b64-1@isp.example>
Content-Type: multipart/report; report-type=feedback-report; boundary=XX`, "XX", []string{
		"Content-Type: message/feedback-report\n\nFeedback-Type: fraud\nUser-Agent: ISP-FBL/3\nVersion: 1\n",
		"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n" + wrap(base64.StdEncoding.EncodeToString([]byte(original)), 60),
	}, "\r\n"), account: "mallory@example.org", verdict: "phish", sample: "cheap meds"},
	{name: "virus, sender only in Return-Path and Sender", report: report(`From: fbl@isp.example
Message-ID: <virus-1@isp.example>
Content-Type: multipart/report; report-type=feedback-report; boundary=VV`, "VV", []string{
		"Content-Type: message/feedback-report\n\nFeedback-Type: virus\nVersion: 1\n",
		"Content-Type: message/rfc822\n\nReturn-Path: <Mallory@Example.org>\nFrom: \"Your Bank\" <security@bank.example>\nSubject: invoice\n\nsee attachment\n",
	}, "\n"), account: "mallory@example.org", verdict: "virus", sample: "see attachment"},
	{name: "abusix shape: no address in the original", reason: arf.ReasonNoAccount, report: report(`From: no-reply@trap.example
Message-ID: 1y6Hkr-ARF
Content-Type: multipart/report; report-type="feedback-report";
  boundary="==ab=="`, "==ab==", []string{
		"Content-Type: message/feedback-report\n\nOriginal-Envelope-Id: 1y6Hkr\nFeedback-Type: abuse\nOriginal-Mail-From: test\nUser-Agent: trap-py/0.1\nVersion: 1\nOriginal-Rcpt-To: a@trap.example\nOriginal-Rcpt-To: b@trap.example\n",
		"Content-Type: message/rfc822\n\nSubject:  \nFrom: \"Someone\" <test>\n\nhttp://spam.example/\n",
	}, "\n")},
	{name: "not local", reason: arf.ReasonNoAccount, report: report(`From: fbl@isp.example
Message-ID: <nl-1@isp.example>
Content-Type: multipart/report; report-type=feedback-report; boundary=NL`, "NL", []string{
		"Content-Type: message/feedback-report\n\nFeedback-Type: abuse\nVersion: 1\nOriginal-Mail-From: <mallory@example.org>\n",
		"Content-Type: message/rfc822\n\nFrom: someone@elsewhere.example\nSubject: x\n\nbody\n",
	}, "\n")},
	{name: "dmarc auth-failure", reason: arf.ReasonNotFeedback, report: report(`From: dmarc@isp.example
Message-ID: <af-1@isp.example>
Content-Type: multipart/report; report-type=feedback-report; boundary=AF`, "AF", []string{
		"Content-Type: message/feedback-report\n\nFeedback-Type: auth-failure\nUser-Agent: OpenDMARC-Filter/1.3.0\nVersion: 1\nAuth-Failure: dmarc\n",
		"Content-Type: text/rfc822-headers\n\nFrom: <mallory@example.org>\nSubject: x\n",
	}, "\n")},
	{name: "a bounce (delivery-status)", reason: arf.ReasonNotARF, report: report(`From: MAILER-DAEMON@mx.example
Content-Type: multipart/report; report-type=delivery-status; boundary=DS`, "DS", []string{
		"Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n",
		"Content-Type: message/rfc822\n\nFrom: mallory@example.org\n\nx\n",
	}, "\n")},
	{name: "no feedback part", reason: arf.ReasonNotARF, report: report(`Content-Type: multipart/report; report-type=feedback-report; boundary=NF`, "NF", []string{
		"Content-Type: text/plain\n\njust text\n", "Content-Type: message/rfc822\n\nFrom: mallory@example.org\n\nx\n",
	}, "\n")},
	{name: "no original", reason: arf.ReasonNoOriginal, report: report(`Content-Type: multipart/report; report-type=feedback-report; boundary=NO`, "NO", []string{
		"Content-Type: message/feedback-report\n\nFeedback-Type: abuse\nVersion: 1\n",
	}, "\n")},
	{name: "a plain message", reason: arf.ReasonNotARF, report: "From: a@example.org\nSubject: hi\n\nhello\n"},
	{name: "not a message", reason: arf.ReasonNotARF, report: "\x00\x01garbage"},
}

func local(a string) bool {
	return strings.HasSuffix(a, "@example.org") || strings.HasSuffix(a, "@example.net")
}

func TestReports(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ingest.ARF([]byte(tc.report), local, now)
			if tc.reason != "" {
				re := &ingest.RefusedError{}
				ok := errors.As(err, &re)
				if !ok || re.Reason != tc.reason || re.Detail == "" {
					t.Fatalf("got %v, %v; want refusal %s", v, err, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Account != tc.account || string(v.Verdict) != tc.verdict || v.Direction != "complaint" || !strings.HasPrefix(v.ID, "arf-") {
				t.Fatalf("event: %+v", v)
			}
			if tc.arrival != "" && v.Time.Format(time.RFC3339) != tc.arrival {
				t.Errorf("time %s, want %s", v.Time, tc.arrival)
			}
			if v.Time.After(now) {
				t.Errorf("time %s after now", v.Time)
			}
			if v.Message == nil || !strings.Contains(v.Message.Raw, tc.sample) {
				t.Errorf("sample lacks %q: %+v", tc.sample, v.Message)
			}
			// Re-delivered (one more Received line on top): the same id.
			again, err := ingest.ARF([]byte("Received: from relay.example by mx.example; Tue, 1 Dec 2026 08:30:00 +0000\r\n"+tc.report), local, now.Add(time.Hour))
			if err != nil || again.ID != v.ID {
				t.Errorf("re-delivery: %v id %s, want %s", err, again.ID, v.ID)
			}
		})
	}
}

func TestDistinctReportsDistinctIDs(t *testing.T) {
	a, _ := arf.Parse([]byte(cases[1].report))
	b, _ := arf.Parse([]byte(cases[2].report))
	if a == nil || b == nil || a.ID() == b.ID() {
		t.Fatalf("ids: %v %v", a, b)
	}
}

// TestIDNamesTheComplaint: the id comes from the report's content, never
// from its own Message-ID, which Postfix adds afresh on each delivery of
// a report without one (the RFC's examples have none).
func TestIDNamesTheComplaint(t *testing.T) {
	b1 := mustRead("testdata/rfc5965-b1.eml")
	id := func(t *testing.T, s string) string {
		t.Helper()
		r, err := arf.Parse([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return r.ID()
	}
	base := id(t, b1)
	withOuter := func(mid string) string {
		return "Received: by mx.example.com (Postfix, from userid 0); Tue, 1 Dec 2026 08:30:00 +0000\n" +
			"Message-Id: <" + mid + "@mx.example.com>\n" + b1
	}
	for _, tc := range []struct {
		name string
		s    string
		same bool
	}{
		{"postfix adds a Message-ID", withOuter("20261201083000.A1"), true},
		{"another delivery, another Message-ID", withOuter("20261201083500.B2"), true},
		{"CRLF line endings", strings.ReplaceAll(b1, "\n", "\r\n"), true},
		{"a recipient named", strings.Replace(b1, "Version: 1\n", "Version: 1\nOriginal-Rcpt-To: <a@example.com>\n", 1), false},
		{"another feedback type", strings.Replace(b1, "Feedback-Type: abuse", "Feedback-Type: fraud", 1), false},
		{"another original", strings.Replace(b1, "Message-ID: 8787KJKJ", "Message-ID: 9999KJKJ", 1), false},
		{"the original's Subject does not count beside its Message-ID", strings.Replace(b1, "Subject: Earn money", "Subject: Earn more money", 1), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := id(t, tc.s); (got == base) != tc.same {
				t.Fatalf("id %s, base %s, want same=%v", got, base, tc.same)
			}
		})
	}
	// Two recipients complaining about one message: two complaints, in
	// whatever order a report lists its Original-Rcpt-To.
	rcpt := func(to ...string) string {
		var f string
		for _, a := range to {
			f += "Original-Rcpt-To: " + a + "\n"
		}
		return strings.Replace(b1, "Version: 1\n", "Version: 1\n"+f, 1)
	}
	a, b, ab, ba := id(t, rcpt("<a@example.com>")), id(t, rcpt("b@example.com")), id(t, rcpt("a@example.com", "B@example.com")), id(t, rcpt("b@example.com", "a@example.com"))
	if a == b || ab != ba || ab == a {
		t.Fatalf("recipients: a %s b %s ab %s ba %s", a, b, ab, ba)
	}
	// An original without a Message-ID is named by its From, To, Date and
	// Subject.
	noMID := strings.Replace(b1, "Message-ID: 8787KJKJ3K4J3K4J3K4J3.mail@example.net\n", "", 1)
	n1, n2 := id(t, noMID), id(t, "Message-Id: <x@mx.example.com>\n"+noMID)
	n3 := id(t, strings.Replace(noMID, "Subject: Earn money", "Subject: Earn more money", 1))
	if n1 != n2 || n1 == n3 || n1 == base {
		t.Fatalf("no Message-ID: %s %s %s (base %s)", n1, n2, n3, base)
	}
}

// TestTruncatedAndOversized: a report cut short, or larger than
// MaxReport, is counted from what it carries when its feedback fields and
// the original's header are complete, and refused when they are not.
func TestTruncatedAndOversized(t *testing.T) {
	b1 := mustRead("testdata/rfc5965-b1.eml")
	full, err := arf.Parse([]byte(b1))
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) int {
		i := strings.Index(b1, s)
		if i < 0 {
			t.Fatalf("%q not in the report", s)
		}
		return i
	}
	big := strings.Replace(b1, "Spam Spam Spam\n", strings.Repeat("Spam Spam Spam\n", 20<<20/15), 1)
	if len(big) < 20<<20 {
		t.Fatalf("big report is %d bytes", len(big))
	}
	b64 := report("From: fbl@isp.example\nContent-Type: multipart/report; report-type=feedback-report; boundary=XX", "XX", []string{
		"Content-Type: message/feedback-report\n\nFeedback-Type: abuse\nVersion: 1\n",
		"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n" + wrap(base64.StdEncoding.EncodeToString([]byte(original+strings.Repeat("more text ", 400))), 60),
	}, "\r\n")
	for _, tc := range []struct {
		name   string
		data   string
		reason string // "" accepted
	}{
		{"cut inside the original's body", b1[:at("Spam Spam Spam")+20], ""},
		{"cut just after the original's header", b1[:at("Spam Spam Spam")+2], ""},
		{"20 MiB, over the limit", big, ""},
		{"base64 original cut mid-line", b64[:len(b64)-1500], ""},
		{"cut inside the original's header", b1[:at("Subject: Earn money")], arf.ReasonNoOriginal},
		{"cut inside the feedback fields", b1[:at("Version: 1")], arf.ReasonNotARF},
		{"20 MiB, cut inside the original's header", b1[:at("Subject: Earn money")] + strings.Repeat("X-Pad: "+strings.Repeat("x", 70)+"\n", 20<<20/78), arf.ReasonTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := arf.Parse([]byte(tc.data))
			if tc.reason != "" {
				e, ok := arf.AsError(err)
				if !ok || e.Reason != tc.reason {
					t.Fatalf("got %v; want refusal %s", err, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !r.Truncated || r.FeedbackType != "abuse" || len(r.Senders()) == 0 {
				t.Fatalf("report: truncated %v type %q senders %v", r.Truncated, r.FeedbackType, r.Senders())
			}
			if len(r.Original) > arf.MaxReport {
				t.Fatalf("original of %d bytes", len(r.Original))
			}
			if strings.Contains(tc.data, "somespammer") && r.ID() != full.ID() {
				t.Fatalf("id %s, the whole report's %s", r.ID(), full.ID())
			}
		})
	}
	if full.Truncated {
		t.Fatal("the whole report says it is truncated")
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range cases {
		f.Add([]byte(tc.report))
	}
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := arf.Parse(data)
		if err != nil {
			if _, ok := arf.AsError(err); !ok {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if r.ID() == "" || r.FeedbackType == "" || r.Original == nil || r.Time(now).After(now) {
			t.Fatalf("parsed report incomplete: %+v", r)
		}
		v, err := ingest.ARF(data, func(string) bool { return true }, now)
		if err == nil {
			if ingestErr := checkEvent(v.ID, v.Account); ingestErr != "" {
				t.Fatal(ingestErr)
			}
		}
	})
}

func checkEvent(id, account string) string {
	if id == "" || account == "" || strings.ContainsAny(account, "\r\n") {
		return "bad event " + id + " " + account
	}
	return ""
}

func wrap(s string, n int) string {
	var b strings.Builder
	for len(s) > n {
		b.WriteString(s[:n] + "\n")
		s = s[n:]
	}
	return b.String() + s + "\n"
}

func mustRead(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		panic(err)
	}
	return string(b)
}
