package notifier

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// transport delivers one rendered message.
type transport interface {
	// send delivers msg from sender to rcpt and returns the server's
	// reply. An error is a *sendError. accepted, when set, is called with
	// the reply as soon as the server has accepted the message (the reply
	// to the end of DATA), before anything else, so that the delivery is
	// recorded as early as it can be.
	send(ctx context.Context, sender, rcpt string, msg []byte, accepted func(reply string)) (reply string, err error)
}

// sendError is a failed delivery attempt, classified where it happened.
type sendError struct {
	permanent bool
	code      int // SMTP reply code, 0 when there was none
	err       error
}

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

func temporary(err error) error { return &sendError{err: err} }

// classify turns an error of the MAIL, RCPT or DATA phase into a
// sendError: a 5xx reply is permanent, everything else (4xx, network
// errors, timeouts) temporary.
func classify(phase string, err error) error {
	err = fmt.Errorf("%s: %w", phase, err)
	var tp *textproto.Error
	if errors.As(err, &tp) {
		return &sendError{permanent: tp.Code >= 500 && tp.Code < 600, code: tp.Code, err: err}
	}
	return &sendError{err: err}
}

// smtpTransport sends with go-mail over SMTP.
//
// Errors while connecting, in the greeting, STARTTLS and AUTH are
// temporary whatever their code: they are about the relay or this
// service's configuration, not about the notice, and a fixed relay or
// password should still deliver every queued notice. Only a 5xx reply to
// MAIL, RCPT or the end of DATA is a permanent failure of the notice.
type smtpTransport struct {
	client  *gomail.Client
	timeout time.Duration
}

func newSMTPTransport(c SMTPConfig) (*smtpTransport, error) {
	port := c.Port
	opts := []gomail.Option{
		gomail.WithTimeout(c.Timeout),
		gomail.WithTLSConfig(&tls.Config{
			ServerName:         c.Host,
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // operator's explicit choice, for test relays
		}),
	}
	switch c.TLS {
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
		if port == 0 {
			port = 25
		}
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
		if port == 0 {
			port = 587
		}
	case TLSImplicit:
		opts = append(opts, gomail.WithSSL())
		if port == 0 {
			port = 465
		}
	default:
		return nil, fmt.Errorf("smtp.tls: unknown mode %q", c.TLS)
	}
	opts = append(opts, gomail.WithPort(port))
	if c.HELO != "" {
		opts = append(opts, gomail.WithHELO(c.HELO))
	}
	if c.Username != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(c.Username), gomail.WithPassword(string(c.Password)))
	}
	client, err := gomail.NewClient(c.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("smtp client: %w", err)
	}
	return &smtpTransport{client: client, timeout: c.Timeout}, nil
}

// send runs one SMTP session for one message. It writes the stored bytes
// as they are, so every attempt sends the same message with the same
// Message-ID.
func (t *smtpTransport) send(ctx context.Context, sender, rcpt string, msg []byte, accepted func(string)) (string, error) {
	c, err := t.client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return "", temporary(fmt.Errorf("connect: %w", err))
	}
	defer func() { _ = c.Close() }()
	// The connection's deadline is set once on dial; stop the session
	// when ctx ends too.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()

	step := func(phase string, f func() error) error {
		if err := c.UpdateDeadline(t.timeout); err != nil {
			return temporary(fmt.Errorf("%s: %w", phase, err))
		}
		if err := f(); err != nil {
			if ctx.Err() != nil {
				return temporary(fmt.Errorf("%s: %w", phase, ctx.Err()))
			}
			return classify(phase, err)
		}
		return nil
	}
	if err := step("mail from", func() error { return c.Mail("<" + sender + ">") }); err != nil {
		return "", err
	}
	if err := step("rcpt to", func() error { return c.Rcpt("<" + rcpt + ">") }); err != nil {
		return "", err
	}
	var w interface {
		Write([]byte) (int, error)
		Close() error
	}
	if err := step("data", func() error {
		var err error
		wc, err := c.Data()
		w = wc
		return err
	}); err != nil {
		return "", err
	}
	if err := step("data", func() error {
		_, err := w.Write(msg)
		return err
	}); err != nil {
		return "", err
	}
	if err := step("end of data", w.Close); err != nil {
		return "", err
	}
	reply := "250 accepted"
	if dc, ok := w.(interface{ ServerResponse() string }); ok && dc.ServerResponse() != "" {
		reply = "250 " + dc.ServerResponse()
	}
	reply = cleanLine(reply, maxLine)
	// The message is accepted: record it before QUIT, which is one more
	// round trip, and whose failure changes nothing.
	if accepted != nil {
		accepted(reply)
	}
	_ = c.Quit()
	return reply, nil
}

// emlTransport writes each message as an .eml file into a directory, for
// local runs without an SMTP server. Files are written under a temporary
// name and renamed, so a reader never sees half a message.
type emlTransport struct{ dir string }

func (t emlTransport) send(_ context.Context, _, rcpt string, msg []byte, accepted func(string)) (string, error) {
	h := sha256.Sum256(msg)
	name := fmt.Sprintf("%s-%s-%s.eml", time.Now().UTC().Format("20060102T150405Z"),
		fileSafe(rcpt), hex.EncodeToString(h[:6]))
	tmp, err := os.CreateTemp(t.dir, ".notice-*.tmp")
	if err != nil {
		return "", temporary(fmt.Errorf("write eml: %w", err))
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(msg); err != nil {
		_ = tmp.Close()
		return "", temporary(fmt.Errorf("write eml: %w", err))
	}
	if err := tmp.Close(); err != nil {
		return "", temporary(fmt.Errorf("write eml: %w", err))
	}
	path := filepath.Join(t.dir, name)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", temporary(fmt.Errorf("write eml: %w", err))
	}
	if accepted != nil {
		accepted("written to " + path)
	}
	return "written to " + path, nil
}

func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '@' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}
