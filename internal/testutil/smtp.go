package testutil

import (
	"bytes"
	"io"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Mail is one message an SMTP server accepted.
type Mail struct {
	From string
	To   []string
	Data []byte
}

// SMTPServer is a real SMTP server (emersion/go-smtp) on a loopback port
// that keeps what it accepts.
type SMTPServer struct {
	Addr string
	mu   sync.Mutex
	mail []Mail
}

// StartSMTP starts an SMTP server on 127.0.0.1:0, closed when the test
// ends.
func StartSMTP(t testing.TB) *SMTPServer {
	t.Helper()
	s := &SMTPServer{}
	srv := smtp.NewServer(smtpBackend{s})
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// Mail returns the messages accepted so far.
func (s *SMTPServer) Mail() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Mail(nil), s.mail...)
}

type smtpBackend struct{ s *SMTPServer }

func (b smtpBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &smtpSession{s: b.s}, nil
}

type smtpSession struct {
	s *SMTPServer
	m Mail
}

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error { ss.m.From = from; return nil }
func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.m.To = append(ss.m.To, to)
	return nil
}
func (ss *smtpSession) Data(r io.Reader) error {
	var b bytes.Buffer
	if _, err := io.Copy(&b, r); err != nil {
		return err
	}
	ss.m.Data = b.Bytes()
	ss.s.mu.Lock()
	ss.s.mail = append(ss.s.mail, ss.m)
	ss.s.mu.Unlock()
	ss.m = Mail{}
	return nil
}
func (ss *smtpSession) Reset()        { ss.m = Mail{} }
func (ss *smtpSession) Logout() error { return nil }

// mailText is the decoded text of a plain-text mail.
func MailText(t testing.TB, raw []byte) (*mail.Message, string) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	r := msg.Body
	if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		r = quotedprintable.NewReader(r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return msg, strings.ReplaceAll(string(b), "\r\n", "\n")
}
