package cluster

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Notice is one message the SMTP sink accepted, with what it says about
// itself: the Message-ID, and the account and suspension its evidence.txt
// names.
type Notice struct {
	At         time.Time
	From       string
	To         []string
	MessageID  string
	Subject    string
	Account    string // from evidence.txt ("Account:"), else the subject
	Suspension string // from evidence.txt ("Suspension:")
	// Samples are the verdict ids of the sample messages in evidence.txt.
	Samples  []string
	Size     int
	ParseErr string // why the message could not be read, if it could not
}

// SMTPSink is an SMTP server (emersion/go-smtp) on a fixed loopback port
// that records every message, and can be taken down (connections refused)
// and brought back on the same port.
type SMTPSink struct {
	Addr    string
	mu      sync.Mutex
	saveDir string
	srv     *smtp.Server
	notices []Notice
	down    bool
}

// NewSMTPSink starts a sink on 127.0.0.1:port (0: any free port).
func NewSMTPSink(port int) (*SMTPSink, error) {
	s := &SMTPSink{Addr: net.JoinHostPort("127.0.0.1", fmt.Sprint(port))}
	if err := s.Up(); err != nil {
		return nil, err
	}
	return s, nil
}

// Up starts serving (again).
func (s *SMTPSink) Up() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("smtp sink: %w", err)
	}
	s.Addr = ln.Addr().String()
	srv := smtp.NewServer(sinkBackend{s})
	srv.Domain = "sink.localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout, srv.WriteTimeout = 30*time.Second, 30*time.Second
	srv.MaxMessageBytes = 32 << 20
	go func() { _ = srv.Serve(ln) }()
	s.srv, s.down = srv, false
	return nil
}

// Down stops serving: the listener closes, so that connections are
// refused, and connections in progress are cut.
func (s *SMTPSink) Down() error {
	s.mu.Lock()
	srv := s.srv
	s.srv, s.down = nil, true
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Close()
}

// SaveTo makes the sink save every message it accepts from now on in
// dir, as it came, one file each (000001.eml, ...): a kept run keeps the
// sink's record, not only what it parsed.
func (s *SMTPSink) SaveTo(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("smtp sink: %w", err)
	}
	s.mu.Lock()
	s.saveDir = dir
	s.mu.Unlock()
	return nil
}

// IsDown reports whether the sink refuses connections now.
func (s *SMTPSink) IsDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

// Notices returns the messages accepted so far, in order.
func (s *SMTPSink) Notices() []Notice {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Notice(nil), s.notices...)
}

// Count is how many messages were accepted so far.
func (s *SMTPSink) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.notices)
}

// Close stops the sink for good.
func (s *SMTPSink) Close() error { return s.Down() }

// add records a message; it fails (and the client retries) when the
// message cannot be saved.
func (s *SMTPSink) add(n Notice, raw []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saveDir != "" {
		name := filepath.Join(s.saveDir, fmt.Sprintf("%06d.eml", len(s.notices)+1))
		if err := os.WriteFile(name, raw, 0o644); err != nil {
			return fmt.Errorf("smtp sink: save: %w", err)
		}
	}
	s.notices = append(s.notices, n)
	return nil
}

type sinkBackend struct{ s *SMTPSink }

func (b sinkBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: b.s}, nil }

type sinkSession struct {
	s    *SMTPSink
	from string
	to   []string
}

func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error { ss.from = from; return nil }
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	n := ParseNotice(b)
	n.At, n.From, n.To = time.Now(), ss.from, ss.to
	if err := ss.s.add(n, b); err != nil {
		return err
	}
	ss.from, ss.to = "", nil
	return nil
}
func (ss *sinkSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *sinkSession) Logout() error { return nil }

// ParseNotice reads an abuse notice: its Message-ID and subject, and the
// account and suspension id from its evidence.txt attachment.
func ParseNotice(raw []byte) Notice {
	n := Notice{Size: len(raw)}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		n.ParseErr = err.Error()
		return n
	}
	n.MessageID = strings.TrimSpace(m.Header.Get("Message-Id"))
	dec := new(mime.WordDecoder)
	if subj, err := dec.DecodeHeader(m.Header.Get("Subject")); err == nil {
		n.Subject = subj
	} else {
		n.Subject = m.Header.Get("Subject")
	}
	if _, rest, ok := strings.Cut(n.Subject, "suspended for "); ok {
		n.Account, _, _ = strings.Cut(rest, " ")
		n.Account = strings.TrimSuffix(n.Account, ":")
	}
	evidence, err := findEvidence(m)
	if err != nil {
		n.ParseErr = err.Error()
		return n
	}
	sc := bufio.NewScanner(bytes.NewReader(evidence))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "Account:"); ok && n.Suspension == "" {
			n.Account = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "Suspension:"); ok && n.Suspension == "" {
			n.Suspension = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "Verdict ID:"); ok {
			n.Samples = append(n.Samples, strings.TrimSpace(v))
		}
	}
	if n.Suspension == "" {
		n.ParseErr = "evidence.txt names no suspension"
	}
	return n
}

func findEvidence(m *mail.Message) ([]byte, error) {
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		return nil, fmt.Errorf("not multipart (%s)", mt)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no evidence.txt part")
		}
		if err != nil {
			return nil, err
		}
		if p.FileName() != "evidence.txt" {
			continue
		}
		var r io.Reader = p
		switch strings.ToLower(p.Header.Get("Content-Transfer-Encoding")) {
		case "quoted-printable":
			r = quotedprintable.NewReader(p)
		case "base64":
			r = base64.NewDecoder(base64.StdEncoding, p)
		}
		return io.ReadAll(r)
	}
}
