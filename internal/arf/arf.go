// Package arf parses feedback-loop reports in the Abuse Reporting Format
// (RFC 5965) with the standard library: a multipart/report with
// report-type=feedback-report, whose message/feedback-report part holds
// the machine-readable fields and whose last part is the original message
// (message/rfc822) or its header (text/rfc822-headers).
//
// Nothing in a report is trusted: sizes are bounded, fields are kept on
// one line, and a report that does not have this shape is refused with a
// reason instead of being guessed at.
package arf

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"slices"
	"strings"
	"time"
)

// Limits of what is parsed.
const (
	MaxReport = 4 << 20 // a whole report
	maxParts  = 16
	maxFields = 64 << 10 // the feedback-report part
)

// Reasons a report is refused; they appear in the API's answers and in
// aupctl's exit message.
const (
	ReasonNotARF      = "not_arf"          // not a multipart/report with a feedback-report part
	ReasonNoOriginal  = "no_original"      // no message/rfc822 or text/rfc822-headers part
	ReasonNotFeedback = "not_a_complaint"  // a Feedback-Type that is not a complaint (auth-failure, ...)
	ReasonNoAccount   = "no_local_account" // the original names no local sender
	ReasonTooLarge    = "too_large"
)

// Error says why a report is refused.
type Error struct {
	Reason string
	Detail string
}

func (e *Error) Error() string { return e.Reason + ": " + e.Detail }

func refuse(reason, format string, args ...any) error {
	return &Error{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// AsError returns the Error in err's chain.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Report is one parsed feedback report.
type Report struct {
	// MessageID is the report's own Message-ID, when it has one. It
	// does not name the complaint (see ID).
	MessageID string
	// Date is the report's Date header, when it parses.
	Date time.Time
	// Fields of the message/feedback-report part, by canonical name
	// (Feedback-Type, User-Agent, Version, Original-Mail-From,
	// Original-Rcpt-To, Arrival-Date, Source-IP, Reported-Domain, ...).
	Fields textproto.MIMEHeader
	// FeedbackType is Feedback-Type in lower case: abuse, fraud, virus,
	// other, not-spam, auth-failure, ...
	FeedbackType string
	// Arrival is Arrival-Date (or the older Received-Date), when it parses.
	Arrival time.Time
	// Original is the reported message as it was attached: the whole
	// message (message/rfc822) or its header only (text/rfc822-headers).
	Original []byte
	// OriginalHeader is the original's parsed header.
	OriginalHeader mail.Header
	// HeadersOnly is true when only the original's header was attached.
	HeadersOnly bool
	// Truncated is true when the report was cut short (or longer than
	// MaxReport) inside the original's body: Original is shorter.
	Truncated bool
	// fingerprint names the complaint (see ID).
	fingerprint [sha256.Size]byte
}

// Parse parses one report. A report larger than MaxReport is parsed from
// its first MaxReport bytes; a report cut short (by that limit, or by
// whoever sent it) is taken from what it carries when its feedback fields
// and the original's header are complete: the feedback-report part ended,
// and the original's header reached the blank line after it. Truncated
// then says so; only the original's body, the sample, is shorter.
func Parse(data []byte) (*Report, error) {
	oversized := len(data) > MaxReport
	if oversized {
		data = data[:MaxReport]
	}
	r, err := parse(data)
	if err != nil && oversized {
		if e, ok := AsError(err); ok {
			return nil, refuse(ReasonTooLarge, "the report is larger than %d bytes, and its first %d bytes do not hold a complete feedback report (%s: %s)", MaxReport, MaxReport, e.Reason, e.Detail)
		}
	}
	if r != nil && oversized {
		r.Truncated = true
	}
	return r, err
}

func parse(data []byte) (*Report, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return nil, refuse(ReasonNotARF, "not an email message: %v", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" {
		return nil, refuse(ReasonNotARF, "the report is %q, not multipart/report; report-type=feedback-report", clip(msg.Header.Get("Content-Type"), 80))
	}
	if rt := strings.ToLower(params["report-type"]); rt != "feedback-report" {
		return nil, refuse(ReasonNotARF, "multipart/report with report-type %q, not feedback-report (a bounce or a DSN?)", clip(rt, 40))
	}
	if params["boundary"] == "" {
		return nil, refuse(ReasonNotARF, "multipart/report without a boundary")
	}
	r := &Report{MessageID: oneLine(msg.Header.Get("Message-Id"))}
	if d, err := mail.ParseDate(msg.Header.Get("Date")); err == nil {
		r.Date = d
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var fields []byte
	haveFields := false
	for n := 0; ; n++ {
		if n >= maxParts {
			return nil, refuse(ReasonNotARF, "more than %d parts", maxParts)
		}
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if haveFields && r.Original != nil {
				break // a cut last boundary after everything needed
			}
			return nil, refuse(ReasonNotARF, "bad MIME structure: %v", err)
		}
		pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		body, cut, err := decodePart(p)
		if err != nil {
			return nil, refuse(ReasonNotARF, "part %d (%s): %v", n+1, clip(pt, 40), err)
		}
		switch pt {
		case "message/feedback-report":
			if haveFields {
				return nil, refuse(ReasonNotARF, "two message/feedback-report parts")
			}
			if cut {
				return nil, refuse(ReasonNotARF, "the report is cut short inside its feedback-report part")
			}
			haveFields, fields = true, body
		case "message/rfc822", "text/rfc822-headers":
			if r.Original == nil {
				if cut && (pt == "text/rfc822-headers" || !headerEnded(body)) {
					return nil, refuse(ReasonNoOriginal, "the report is cut short inside the original message's header")
				}
				r.Original = body
				r.HeadersOnly = pt == "text/rfc822-headers"
			}
		}
		if cut {
			r.Truncated = true
			break // nothing follows a cut part
		}
	}
	if !haveFields {
		return nil, refuse(ReasonNotARF, "no message/feedback-report part")
	}
	if len(fields) > maxFields {
		return nil, refuse(ReasonNotARF, "the feedback-report part is larger than %d bytes", maxFields)
	}
	tr := textproto.NewReader(bufio.NewReader(io.MultiReader(bytes.NewReader(bytes.TrimLeft(fields, "\r\n")), strings.NewReader("\r\n\r\n"))))
	r.Fields, err = tr.ReadMIMEHeader()
	if err != nil && len(r.Fields) == 0 {
		return nil, refuse(ReasonNotARF, "the feedback-report part is not a list of fields: %v", err)
	}
	r.FeedbackType = strings.ToLower(oneLine(r.Fields.Get("Feedback-Type")))
	if r.FeedbackType == "" {
		return nil, refuse(ReasonNotARF, "the feedback-report part has no Feedback-Type")
	}
	for _, k := range []string{"Arrival-Date", "Received-Date"} {
		if t, err := mail.ParseDate(r.Fields.Get(k)); err == nil {
			r.Arrival = t
			break
		}
	}
	if r.Original == nil {
		return nil, refuse(ReasonNoOriginal, "no message/rfc822 or text/rfc822-headers part: the original message is missing")
	}
	orig := r.Original
	if r.HeadersOnly && !bytes.Contains(orig, []byte("\n\n")) && !bytes.Contains(orig, []byte("\r\n\r\n")) {
		orig = append(append([]byte{}, orig...), "\r\n\r\n"...)
	}
	om, err := mail.ReadMessage(bytes.NewReader(orig))
	if err != nil {
		return nil, refuse(ReasonNoOriginal, "the original message does not parse: %v", err)
	}
	r.OriginalHeader = om.Header
	r.fingerprint = fingerprint(r.FeedbackType, r.Fields, om.Header)
	return r, nil
}

// decodePart reads a part, undoing base64 and quoted-printable transfer
// encodings (some feedback loops encode even message/rfc822 parts). cut
// says the report ended inside the part: body is what it held, decoded
// as far as it goes.
func decodePart(p *multipart.Part) (body []byte, cut bool, err error) {
	raw, err := io.ReadAll(io.LimitReader(p, MaxReport))
	if errors.Is(err, io.ErrUnexpectedEOF) {
		cut, err = true, nil
	}
	if err != nil {
		return nil, false, err
	}
	var rd io.Reader = bytes.NewReader(raw)
	switch strings.ToLower(strings.TrimSpace(p.Header.Get("Content-Transfer-Encoding"))) {
	case "base64":
		rd = base64.NewDecoder(base64.StdEncoding, &stripSpace{r: rd})
	case "quoted-printable":
		rd = quotedprintable.NewReader(rd)
	default:
		return raw, cut, nil
	}
	body, err = io.ReadAll(rd)
	if err != nil && cut {
		err = nil // the last, cut quantum or escape
	}
	return body, cut, err
}

// headerEnded says a message's header reached the blank line after it.
func headerEnded(msg []byte) bool {
	return bytes.Contains(msg, []byte("\n\n")) || bytes.Contains(msg, []byte("\n\r\n"))
}

// stripSpace drops line breaks and spaces, which base64 bodies carry.
type stripSpace struct{ r io.Reader }

func (s *stripSpace) Read(p []byte) (int, error) {
	for {
		n, err := s.r.Read(p)
		j := 0
		for _, c := range p[:n] {
			if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// Verdict maps the Feedback-Type to the verdict a complaint carries:
// abuse and other are spam, fraud is phish, virus is virus, not-spam is
// ham (counted for statistics only). ok is false for feedback that is no
// complaint about a message (auth-failure, opt-out, dmarc, ...).
func (r *Report) Verdict() (verdict string, ok bool) {
	switch r.FeedbackType {
	case "abuse", "other":
		return "spam", true
	case "fraud":
		return "phish", true
	case "virus":
		return "virus", true
	case "not-spam":
		return "ham", true
	}
	return "", false
}

// Senders returns the addresses of the original message that may be the
// local account responsible, in order: From, Sender, Return-Path; only
// addresses from the original message itself, never from the report's
// own envelope or header.
func (r *Report) Senders() []string {
	var out []string
	seen := map[string]bool{}
	for _, k := range []string{"From", "Sender", "Return-Path"} {
		v := r.OriginalHeader.Get(k)
		if v == "" {
			continue
		}
		list, err := mail.ParseAddressList(v)
		if err != nil {
			// A bare addr-spec in angle brackets, as Return-Path has.
			s := strings.Trim(strings.TrimSpace(v), "<>")
			if a, err2 := mail.ParseAddress("<" + s + ">"); err2 == nil {
				list = []*mail.Address{a}
			}
		}
		for _, a := range list {
			addr := strings.ToLower(a.Address)
			if addr != "" && !seen[addr] {
				seen[addr] = true
				out = append(out, addr)
			}
		}
	}
	return out
}

// ID names the complaint, not the delivery of the report: one complaint
// per original message, per complaining recipient, per feedback type.
// It is derived from the report's content only, never from the report's
// own Message-ID (Postfix adds a fresh one to a report that has none, so
// every re-delivery would look new), so a report delivered again, over
// HTTP or through the Postfix pipe, has the same id and counts once,
// while two recipients complaining about one message count twice.
//
//   - the original's sender: its From and the report's
//     Original-Mail-From;
//   - the original message: its Message-ID; without one, its To, Date
//     and Subject with the report's Arrival-Date (or Received-Date) and
//     Source-IP;
//   - the complaining recipient: Original-Rcpt-To (every one, in any
//     order); without it, the original's To;
//   - Feedback-Type.
func (r *Report) ID() string {
	return "arf-" + hex.EncodeToString(r.fingerprint[:16])
}

// fingerprint hashes what names a complaint (see ID).
func fingerprint(feedbackType string, fields textproto.MIMEHeader, orig mail.Header) [sha256.Size]byte {
	h := sha256.New()
	put := func(k, v string) {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(v))
		h.Write([]byte{0})
	}
	put("v", "2")
	put("type", feedbackType)
	// The sender the complaint counts against: one Message-ID reused by
	// messages of two accounts makes two complaints.
	put("from", strings.ToLower(oneLine(orig.Get("From"))))
	put("mail-from", strings.ToLower(oneLine(fields.Get("Original-Mail-From"))))
	if mid := oneLine(orig.Get("Message-Id")); mid != "" {
		put("mid", strings.Trim(mid, "<>"))
	} else {
		for _, k := range []string{"To", "Date", "Subject"} {
			put(k, oneLine(orig.Get(k)))
		}
		for _, k := range []string{"Arrival-Date", "Received-Date", "Source-Ip"} {
			put(k, strings.ToLower(oneLine(fields.Get(k))))
		}
	}
	var rcpts []string
	for _, v := range fields.Values("Original-Rcpt-To") {
		if a := strings.ToLower(strings.Trim(oneLine(v), "<> ")); a != "" {
			rcpts = append(rcpts, a)
		}
	}
	if len(rcpts) == 0 {
		put("to", strings.ToLower(oneLine(orig.Get("To"))))
	} else {
		slices.Sort(rcpts)
		put("rcpt", strings.Join(slices.Compact(rcpts), ","))
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// Time is when the complained-of message arrived (Arrival-Date), else the
// report's Date, else now; never after now.
func (r *Report) Time(now time.Time) time.Time {
	t := r.Arrival
	if t.IsZero() {
		t = r.Date
	}
	if t.IsZero() || t.After(now) {
		t = now
	}
	return t.UTC()
}

func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return clip(strings.TrimSpace(s), 998)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
