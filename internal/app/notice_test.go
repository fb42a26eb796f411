package app

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/testutil"
)

// TestNoticeEndToEnd: events that push an account over its threshold lead
// to exactly one email at a real SMTP server, to the company's abuse
// contact, with evidence.txt holding at most three samples.
func TestNoticeEndToEnd(t *testing.T) {
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	srv := testutil.StartSMTP(t)
	cfg := testConfig(t, ns.ClientURL(), prefix)
	host, port, _ := net.SplitHostPort(srv.Addr)
	cfg.Notifier.EMLDir = ""
	cfg.Notifier.SMTP.Host = host
	cfg.Notifier.SMTP.Port, _ = strconv.Atoi(port)
	cfg.Notifier.SMTP.TLS = "none"
	cfg.Notifier.From = "aupd@provider.test"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := start(t, cfg)
	now := time.Now()
	for i := range 6 { // acme's threshold is 3: the 4th crosses it
		h.publish("aup.verdict.outbound", verdict(fmt.Sprint("n-", i), "outbound", "dave@example.com", "spam", now), "")
	}
	h.drained()
	testutil.Eventually(t, 20*time.Second, func() bool { return len(srv.Mail()) >= 1 }, "no notice arrived")
	// Give a duplicate every chance to show up before counting.
	h.stop()
	msgs := srv.Mail()
	if len(msgs) != 1 {
		t.Fatalf("%d notices, want exactly 1", len(msgs))
	}
	m := msgs[0]
	if strings.Join(m.To, ",") != "abuse@example.com" {
		t.Errorf("notice to %v, want the company's abuse contact", m.To)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get("Auto-Submitted") != "auto-generated" || !strings.Contains(msg.Header.Get("Subject"), "[AUP]") {
		t.Errorf("headers %v", msg.Header)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		t.Fatalf("content type %q: %v", mt, err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var evidence string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.FileName() == "evidence.txt" {
			var r io.Reader = p
			if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "base64") {
				r = base64.NewDecoder(base64.StdEncoding, p)
			}
			b, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			evidence = string(b)
			if ct := p.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("evidence.txt content type %q", ct)
			}
		}
	}
	if evidence == "" {
		t.Fatal("no evidence.txt attachment")
	}
	if n := strings.Count(evidence, "dave@example.com"); n == 0 {
		t.Errorf("evidence names no sample of dave's:\n%s", evidence)
	}
	samples := 0
	for i := range 6 {
		if strings.Contains(evidence, fmt.Sprint("offer n-", i)) {
			samples++
		}
	}
	if samples < 1 || samples > 3 {
		t.Errorf("evidence holds %d samples, want 1 to 3:\n%s", samples, evidence)
	}
}
