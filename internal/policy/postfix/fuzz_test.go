package postfix

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"regexp"
	"testing"
	"time"
)

// bufConn is a net.Conn that reads a fixed input and records what is
// written.
type bufConn struct {
	r   io.Reader
	out bytes.Buffer
}

func (c *bufConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *bufConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *bufConn) Close() error                     { return nil }
func (c *bufConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *bufConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *bufConn) SetDeadline(time.Time) error      { return nil }
func (c *bufConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bufConn) SetWriteDeadline(time.Time) error { return nil }

var replyRE = regexp.MustCompile(`^action=[\x20-\x7e]+\n\n$`)

// FuzzPostfixRequest feeds arbitrary bytes to a policy connection. It must
// never panic, every reply must be one well-formed action line followed by
// an empty line, and there are never more replies than requests.
func FuzzPostfixRequest(f *testing.F) {
	seeds := []string{
		"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=closed@example.test\n\n",
		"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username=nosend@example.test\nrecipient=a@b.test\n\n",
		"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=maint@example.test\n\nrequest=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nsasl_username=locked@example.test\n\n",
		"request=smtpd_access_policy\r\nprotocol_state=RCPT\r\nrecipient=norecv@example.test\r\n\r\n",
		"\n\n\n",
		"no equals sign\n\n",
		"=\n\n",
		"request=smtpd_access_policy\nrecipient=" + string(bytes.Repeat([]byte("a"), 5000)) + "\n\n",
		"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=\x00\xff@example.test\n\n",
		"request=smtpd_access_policy\nprotocol_state=rcpt\nrecipient=Closed@EXAMPLE.test\n\n",
		"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=closed@example.test",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	acc := standardAccounts()
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := New(Config{ErrorAction: "DEFER_IF_PERMIT x"}, acc, Options{Now: fixedNow})
		if err != nil {
			t.Fatal(err)
		}
		c := &bufConn{r: bytes.NewReader(data)}
		s.serveConn(context.Background(), c)
		out := c.out.Bytes()
		replies := 0
		for len(out) > 0 {
			i := bytes.Index(out, []byte("\n\n"))
			if i < 0 {
				t.Fatalf("trailing partial reply %q", out)
			}
			one := out[:i+2]
			if !replyRE.Match(one) {
				t.Fatalf("malformed reply %q", one)
			}
			replies++
			out = out[i+2:]
		}
		if requests := bytes.Count(data, []byte("\n")) + 1; replies > requests {
			t.Fatalf("%d replies to at most %d requests", replies, requests)
		}
		// Every request the parser accepts gets a decision that renders
		// as one line.
		if req, err := readRequest(bufioReader(data), s.lim); err == nil {
			action, result := s.Decide(context.Background(), req)
			if result == "" || !replyRE.Match(formatReply(action)) {
				t.Fatalf("Decide(%v) = %q, %q", req, action, result)
			}
		}
	})
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
