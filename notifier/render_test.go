package notifier

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file; run go test -update and review the diff\n--- got ---\n%s", name, got)
	}
}

func testRenderer(t testing.TB) *renderer {
	t.Helper()
	cfg := testConfig(25)
	r, err := newRenderer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// goldenNotice is a fixed notice. Five samples are referenced, four
// found: three copies of one campaign's message and one other message,
// long enough to be cut. The evidence shows the other message and two
// copies, the second of which is not repeated.
func goldenNotice() notice {
	at := time.Date(2026, 11, 21, 10, 15, 0, 0, time.UTC)
	v1 := testVerdict("01JD3Q5W8Z6N8K3R2V7XH4T9QF", at.Add(-3*time.Hour), "Cheap meds", "Buy now at http://pharma.example/")
	v2 := testVerdict("01JD3Q5W8Z6N8K3R2V7XH4T9QG", at.Add(-2*time.Hour), "Cheap meds", "Buy now at http://pharma.example/")
	v2.Message.Raw = v1.Message.Raw
	v3 := testVerdict("01JD3Q5W8Z6N8K3R2V7XH4T9QH", at.Add(-1*time.Hour), "Your invoice",
		"Dear customer,\r\n\r\nplease open the attached invoice.\r\n"+strings.Repeat("Lorem ipsum dolor sit amet. ", 700))
	v3.Direction = "complaint"
	v3.Source = "fbl-provider-x"
	v3.Score = nil
	v4 := testVerdict("01JD3Q5W8Z6N8K3R2V7XH4T9QJ", at.Add(-30*time.Minute), "Cheap meds", "Buy now at http://pharma.example/")
	v4.Message.Raw = v1.Message.Raw
	ev := testSuspension("alice@example.com", "example", at, []uint64{11, 12, 13, 14, 15})
	ev.ID = "01JD3Q6ABCDEF"
	ev.Suspension.ID = "01JD3Q6SUSP"
	return notice{
		event: ev, company: Company{Name: "Example Ltd", AbuseContact: "Abuse Team <abuse@example.com>"}, companyOK: true,
		samples:   pickSamples([]*events.Verdict{v1, v2, v3, v4}),
		fetched:   4,
		now:       at.Add(2 * time.Second),
		messageID: "aup.golden.0123456789ab@provider.test",
		boundary:  "aupd-golden-boundary",
	}
}

func TestRenderGolden(t *testing.T) {
	r := testRenderer(t)
	rn, err := r.render(goldenNotice())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "notice.golden", rn.message)
	golden(t, "evidence.golden", rn.evidence)

	p, err := parseNotice(rn.message)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.attachments) != 1 || !bytes.Equal(p.attachments[0].data, rn.evidence) {
		t.Fatalf("attachment does not carry evidence.txt")
	}
	ev := string(rn.evidence)
	if got := strings.Count(ev, "----- Sample "); got != 3 {
		t.Errorf("%d samples, want 3", got)
	}
	if !strings.Contains(ev, "Subject:      Your invoice") || strings.Count(ev, "Subject:      Cheap meds") != 2 {
		t.Errorf("samples are not the expected ones:\n%s", ev)
	}
	if !strings.Contains(ev, "[... cut: ") {
		t.Errorf("long message not cut")
	}
}

// expectedHeaders are exactly the top-level headers of a notice.
var expectedHeaders = []string{
	"Auto-Submitted", "Content-Type", "Date", "From", "Message-Id", "Mime-Version", "Reply-To",
	"Subject", "To", "User-Agent", "X-Aupd-Notice", "X-Auto-Response-Suppress", "X-Mailer",
}

func headerKeys(h map[string][]string) []string {
	var keys []string
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkNotice asserts the structural properties every notice has.
func checkNotice(t *testing.T, raw, evidence []byte, rcpt string) *parsedNotice {
	t.Helper()
	p, err := parseNotice(raw)
	if err != nil {
		t.Fatalf("parse notice: %v\n%s", err, raw)
	}
	if got := headerKeys(p.header); !slices.Equal(got, expectedHeaders) {
		t.Fatalf("headers %q, want %q", got, expectedHeaders)
	}
	for k, v := range p.header {
		if len(v) != 1 {
			t.Fatalf("header %s appears %d times", k, len(v))
		}
	}
	if got := p.header.Get("Auto-Submitted"); got != "auto-generated" {
		t.Errorf("Auto-Submitted %q", got)
	}
	if got := p.header.Get(NoticeHeader); got != NoticeHeaderValue {
		t.Errorf("%s %q", NoticeHeader, got)
	}
	to, err := p.header.AddressList("To")
	if err != nil || len(to) != 1 || to[0].Address != rcpt {
		t.Errorf("To %q (%v), want %s", p.header.Get("To"), err, rcpt)
	}
	if len(p.attachments) != 1 {
		t.Fatalf("%d attachments, want 1", len(p.attachments))
	}
	a := p.attachments[0]
	if a.name != EvidenceName || !strings.HasPrefix(a.contentType, "text/plain; charset=utf-8") {
		t.Errorf("attachment %q of type %q", a.name, a.contentType)
	}
	if evidence != nil && !bytes.Equal(a.data, evidence) {
		t.Errorf("attachment differs from the stored evidence")
	}
	if !utf8.Valid(a.data) || !utf8.ValidString(p.body) {
		t.Errorf("invalid UTF-8 in the notice")
	}
	if n := strings.Count(string(a.data), "----- Sample "); n > MaxSamples {
		t.Errorf("%d samples", n)
	}
	return p
}

func FuzzRenderNotice(f *testing.F) {
	f.Add("alice@example.com", "Example Ltd", "abuse@example.com", "s1", "Cheap meds", "bob@example.net", "Buy now", 100)
	f.Add("a\r\nBcc: victim@example.org@x", "Evil\r\nX-Injected: yes", "x@y.z\r\nBcc: b@c.d", "id\r\nX-Id: 1",
		"Subj\r\nX-Evil: 1\r\n\r\n--aupd-", "to\n", "--aupd-\r\nContent-Type: text/html\r\n\r\n<b>", 5)
	f.Add("\xff\xfe@\x80.com", "\xc3(", "\"Abuse\" <abuse@exa\xffmple.com>", "\x00", "\u202egnp.exe", "\x1b[31m", "\r\n.\r\n", 3000)
	f.Add("alice@example.com", "Name", "Ab\"use <x@y>", "s", "=?utf-8?q?=0D=0AX-Evil=3A_1?=", "a", "From: x\r\nContent-Transfer-Encoding: base64\r\n\r\n", 70000)
	r := testRenderer(f)
	f.Fuzz(func(t *testing.T, account, company, contact, suspID, subject, to, body string, size int) {
		size = min(max(size, 0), 200_000)
		at := time.Date(2026, 11, 21, 10, 15, 0, 0, time.UTC)
		const sentinel = "EVIDENCE-SENTINEL-Q7"
		var samples []*events.Verdict
		for i := range 3 {
			v := testVerdict(suspID+string(rune('a'+i)), at, subject, "")
			v.Account, v.Source = account, company
			v.Message.To = []string{to, contact}
			v.Message.From = subject
			v.Message.MessageID = body
			v.Message.Raw = sentinel + body + strings.Repeat(body+"\r\n", size/(len(body)+2)+1)[:size] + subject
			samples = append(samples, v)
		}
		ev := testSuspension(account, company, at, []uint64{1, 2, 3})
		ev.Suspension.ID, ev.ID = suspID, suspID
		ev.Suspension.Services = []string{subject, "send"}
		n := notice{event: ev, company: Company{Name: company, AbuseContact: contact}, companyOK: true,
			samples: pickSamples(samples), fetched: len(samples), now: at, messageID: r.newMessageID(ev, at)}
		rn, err := r.render(n)
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		wantRcpt, _ := r.recipient(n.company, true, account)
		if wantRcpt == nil {
			if rn.recipient != "" {
				t.Fatalf("notice about the fallback contact itself addressed to %q", rn.recipient)
			}
			return
		}
		p := checkNotice(t, rn.message, rn.evidence, wantRcpt.Address)
		if !strings.HasPrefix(p.header.Get("Subject"), "[AUP] ") && !strings.HasPrefix(rn.subject, "[AUP] ") {
			t.Errorf("subject %q has no tag", p.header.Get("Subject"))
		}
		if !strings.Contains(string(p.attachments[0].data), sentinel) {
			t.Errorf("evidence lost the sample text")
		}
		if strings.Contains(p.body, sentinel) {
			t.Errorf("sample text leaked into the body")
		}
		for k, v := range p.header {
			if strings.Contains(strings.Join(v, " "), sentinel) {
				t.Errorf("sample text leaked into header %s", k)
			}
		}
		if len(rn.evidence) > 3*(r.cfg.EvidenceMaxBytes*5+20_000) {
			t.Errorf("evidence of %d bytes is not bounded", len(rn.evidence))
		}
	})
}

// volumeNotice is a fixed notice of a volume limit's suspension, without
// samples.
func volumeNotice() notice {
	at := time.Date(2026, 11, 21, 10, 15, 0, 0, time.UTC)
	ev := testSuspension("alice@example.com", "example", at, nil)
	ev.ID, ev.Suspension.ID = "01JD3Q6VOLEV", "01JD3Q6VOLSUSP"
	msgs, rcpts := 37, 2001
	ev.Suspension.Threshold, ev.Suspension.Count, ev.Suspension.Counts = 2000, 2001, map[string]int{}
	ev.Suspension.WindowStart = at.Add(-24 * time.Hour)
	ev.Suspension.Volume = &events.VolumeCrossing{Limit: "daily", Kind: "recipients", WindowSeconds: 86400,
		Messages: &msgs, Recipients: &rcpts, Since: at.Add(-110 * time.Minute), Clients: []string{"192.0.2.1", "2001:db8:1:2::/64"}}
	return notice{
		event: ev, company: Company{Name: "Example Ltd", AbuseContact: "Abuse Team <abuse@example.com>"}, companyOK: true,
		now: at.Add(2 * time.Second), messageID: "aup.golden.volume@provider.test", boundary: "aupd-golden-boundary",
	}
}

// renderGolden renders n, compares it with the golden files of name
// (notice-<name>.golden, evidence-<name>.golden), checks it, and returns
// its subject, body and evidence.txt as one text.
func renderGolden(t *testing.T, n notice, name string) string {
	t.Helper()
	rn, err := testRenderer(t).render(n)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "notice-"+name+".golden", rn.message)
	golden(t, "evidence-"+name+".golden", rn.evidence)
	checkNotice(t, rn.message, rn.evidence, "abuse@example.com")
	p, err := parseNotice(rn.message)
	if err != nil {
		t.Fatal(err)
	}
	return p.header.Get("Subject") + "\n" + strings.ReplaceAll(p.body, "\r\n", "\n") + "\n" + string(rn.evidence)
}

func TestRenderVolumeGolden(t *testing.T) {
	text := renderGolden(t, volumeNotice(), "volume")
	for _, want := range []string{
		"sending volume limit exceeded",
		"this mailbox sent\n37 messages to 2,001 recipients.",
		"Our limit (volume:daily) is\n2,000 recipients in any 24 hours",
		"between 2026-11-21 08:25:00 UTC",
		"    192.0.2.1\n    2001:db8:1:2::/64",
		"The volume rule volume:daily crossed without samples",
		"Clients:      192.0.2.1, 2001:db8:1:2::/64",
	} {
		if !strings.Contains(strings.ToLower(text), strings.ToLower(want)) {
			t.Errorf("notice lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "identified as spam") {
		t.Errorf("a volume notice speaks of spam counts:\n%s", text)
	}
}

func TestVolumeWords(t *testing.T) {
	one, many := 1, 12345
	for _, tc := range []struct {
		v    events.VolumeCrossing
		max  int
		sent string
		lim  string
	}{
		{events.VolumeCrossing{Kind: "recipients", WindowSeconds: 3600, Recipients: &many}, 500, "mail to 12,345 recipients", "500 recipients in any 1 hour"},
		{events.VolumeCrossing{Kind: "messages", WindowSeconds: 600, Messages: &one}, 1, "1 message", "1 message in any 10 minutes"},
		{events.VolumeCrossing{Kind: "messages", WindowSeconds: 7 * 86400, Messages: &many, Recipients: &many}, 1000000, "12,345 messages to 12,345 recipients", "1,000,000 messages in any 7 days"},
		{events.VolumeCrossing{Kind: "recipients", WindowSeconds: 5400, Recipients: &one}, 0, "mail to 1 recipient", "0 recipients in any 90 minutes"},
	} {
		d := volumeData(&tc.v, tc.max)
		if d.Sent != tc.sent || d.Limit != tc.lim {
			t.Errorf("%+v: %q, %q; want %q, %q", tc.v, d.Sent, d.Limit, tc.sent, tc.lim)
		}
	}
}

// rateNotice is a fixed notice of a spam-rate suspension.
func rateNotice() notice {
	n := goldenNotice()
	n.messageID = "aup.golden.rate@provider.test"
	s := n.event.Suspension
	s.Rule, s.Count, s.Threshold = rules.RuleSpamRate, 45, 200
	s.Counts = map[string]int{"outbound": 45}
	s.Rate = &events.RateFacts{Spam: 45, Ham: 455, Limit: 0.05, MinSpam: 20}
	return n
}

func TestRenderRateGolden(t *testing.T) {
	text := renderGolden(t, rateNotice(), "rate")
	for _, want := range []string{
		"spam rate exceeded",
		"this mailbox sent 500 messages, and our spam filter identified\n45 of them (9%) as spam.",
		"Our limit (spam_rate) is 5% of the\nmail a mailbox sends, once at least 20 of its messages",
		"Spam rate:    45 of 500 outbound messages identified as spam (9%)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the notice lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "Our\nlimit is 200") {
		t.Errorf("a rate notice speaks of the count's threshold:\n%s", text)
	}
}

func TestPercent(t *testing.T) {
	for f, want := range map[float64]string{0.05: "5%", 0.0125: "1.25%", 0.4: "40%", 0.09: "9%", 1.0 / 3: "33.33%", 0.003: "0.3%"} {
		if got := percent(f); got != want {
			t.Errorf("percent(%v) = %q, want %q", f, got, want)
		}
	}
}

// A share just over the limit does not read as equal to it.
func TestRateJustOver(t *testing.T) {
	d := rateData(&events.RateFacts{Spam: 1001, Ham: 19015, Limit: 0.05, MinSpam: 20}) // 5.001%
	if d.Share != "just over 5%" || d.Limit != "5%" {
		t.Fatalf("%+v", d)
	}
	if d := rateData(&events.RateFacts{Spam: 9, Ham: 91, Limit: 0.05}); d.Share != "9%" {
		t.Fatalf("%+v", d)
	}
}
