package notifier

import (
	"bytes"
	"context"
	"io"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
)

// TestSendText: aupd's own plain-text mail goes through the notifier's
// SMTP transport with its From and Reply-To, the header that marks its
// kind, and control characters cleaned; an address that is not one is
// refused before anything is sent.
func TestSendText(t *testing.T) {
	srv := startSMTP(t, smtpOpts{tlsMode: TLSNone})
	rdb, prefix := testRedis(t)
	n, err := New(testConfig(srv.port(t)), Options{Redis: rdb, KeyPrefix: prefix, Samples: StreamSamples{}})
	if err != nil {
		t.Fatal(err)
	}
	body := "Hello,\n\nline two\x1b[31m\nbye\n"
	if err := n.SendText(context.Background(), "Alice@Acme.test", "Your link\r\nBcc: evil@x.test", body, SignInHeaderValue); err != nil {
		t.Fatal(err)
	}
	if err := n.SendText(context.Background(), "not an address", "s", "b", SignInHeaderValue); err == nil {
		t.Error("sent to a non-address")
	}
	msgs := srv.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	if msgs[0].from != "abuse-desk@provider.test" || len(msgs[0].to) != 1 || msgs[0].to[0] != "Alice@Acme.test" {
		t.Errorf("envelope %q -> %q", msgs[0].from, msgs[0].to)
	}
	m, err := mail.ReadMessage(bytes.NewReader(msgs[0].data))
	if err != nil {
		t.Fatal(err)
	}
	h := m.Header
	if h.Get(NoticeHeader) != SignInHeaderValue || h.Get("Auto-Submitted") != "auto-generated" || h.Get("Bcc") != "" ||
		!strings.Contains(h.Get("Reply-To"), "abuse@provider.test") || !strings.HasPrefix(h.Get("Message-Id"), "<aup-desk-sign-in.") ||
		!strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Errorf("headers %v", h)
	}
	if strings.ContainsAny(h.Get("Subject"), "\r\n") || !strings.HasPrefix(h.Get("Subject"), "Your link") {
		t.Errorf("subject %q", h.Get("Subject"))
	}
	text, _ := io.ReadAll(quotedprintable.NewReader(m.Body))
	if s := string(text); !strings.Contains(s, "line two") || strings.Contains(s, "\x1b") {
		t.Errorf("body %q", s)
	}
}
