package desk

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/aupd/aupd/notifier"
)

// The evidence of a suspension is stored as evidence.txt (notifier). The
// account page shows it as messages: for each sample, what the filter
// said, the message's header fields (encoded words decoded), then its
// body, and the client addresses its Received fields name. Everything
// here is text for html/template, which escapes it; nothing is markup.

// evidenceDoc is evidence.txt read back into its parts.
type evidenceDoc struct {
	Summary []notifier.Field
	Note    string // what evidence.txt says of its samples, as one paragraph
	Samples []sampleView
}

// sampleView is one sample message.
type sampleView struct {
	N       int
	Meta    []notifier.Field // time, verdict, direction, source, score, verdict id
	Summary []notifier.Field // From, To, Subject, Date, Message-ID, decoded
	Subject string           // decoded
	Headers []headerField    // the message's own header, unfolded
	Body    string
	Cut     string // bytes of the message not shown ("" none)
	Note    string // why there is no text
	Hops    []hop  // the client addresses of its Received fields, earliest first
}

// headerField is one field of a message's header. Decoded is its value
// with RFC 2047 encoded words decoded, when that differs.
type headerField struct {
	Name, Value, Decoded string
}

// maxHeaderFields bounds the header fields shown per message.
const maxHeaderFields = 200

// parseEvidence reads evidence.txt into messages; nil for a text of
// another layout, which the page shows as it is.
func parseEvidence(text string) *evidenceDoc {
	ev, ok := notifier.ParseEvidence(text)
	if !ok {
		return nil
	}
	doc := &evidenceDoc{Summary: ev.Summary}
	var note []string
	for _, n := range ev.Notes {
		// how evidence.txt quotes the text; the page shows it otherwise
		if !strings.HasPrefix(n, "Each message text is quoted") {
			note = append(note, n)
		}
	}
	// evidence.txt wraps its note at 72 columns; the page lets it flow.
	doc.Note = strings.Join(note, " ")
	for i, s := range ev.Samples {
		sv := sampleView{N: i + 1, Meta: s.Meta, Cut: s.Cut, Note: s.Note}
		for _, f := range s.Headers {
			f.Value = decodeWords(f.Value)
			if f.Label == "Subject" {
				sv.Subject = f.Value
			}
			sv.Summary = append(sv.Summary, f)
		}
		sv.Headers, sv.Body = splitMessage(s.Text)
		sv.Hops = receivedHops(sv.Headers)
		doc.Samples = append(doc.Samples, sv)
	}
	return doc
}

// splitMessage splits a message text into its header fields (unfolded)
// and its body. A line that is neither a field nor the continuation of
// one ends the header there.
func splitMessage(text string) ([]headerField, string) {
	var fields []headerField
	rest := text
	for rest != "" {
		line, after, _ := strings.Cut(rest, "\n")
		if line == "" {
			rest = after
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			f := &fields[len(fields)-1]
			f.Value += " " + strings.TrimLeft(line, " \t")
			rest = after
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") || len(fields) == maxHeaderFields {
			break
		}
		fields = append(fields, headerField{Name: name, Value: strings.TrimLeft(value, " \t")})
		rest = after
	}
	for i := range fields {
		if d := decodeWords(fields[i].Value); d != fields[i].Value {
			fields[i].Decoded = d
		}
	}
	return fields, rest
}

// decodeWords decodes the RFC 2047 encoded words of a header value for
// display; a value that does not decode (an unknown charset) is shown as
// it is. Control and bidi characters in what comes out are replaced.
func decodeWords(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	d := mime.WordDecoder{CharsetReader: charsetReader}
	out, err := d.DecodeHeader(s)
	if err != nil {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == utf8.RuneError, r < 0x20 && r != '\t', r >= 0x7f && r < 0xa0,
			r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f:
			return '\uFFFD'
		}
		return r
	}, out)
}

// errCharset: a charset decodeWords does not know.
var errCharset = errors.New("unknown charset")

// charsetReader decodes the charsets of encoded words besides the ones
// mime knows (UTF-8, ISO-8859-1, US-ASCII): Windows-1252 and
// ISO-8859-15, the other common single-byte ones of Western mail.
func charsetReader(charset string, input io.Reader) (io.Reader, error) {
	var table *[128]rune
	switch strings.ToLower(charset) {
	case "windows-1252", "cp1252", "x-cp1252":
		table = &cp1252
	case "iso-8859-15", "iso8859-15", "latin-9", "latin9":
		table = &latin9
	case "utf8":
		return input, nil
	case "latin1", "iso8859-1", "cp819":
		table = &latin1
	default:
		return nil, errCharset
	}
	b, err := io.ReadAll(io.LimitReader(input, 64<<10))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for _, c := range b {
		if c < 0x80 {
			out.WriteByte(c)
			continue
		}
		out.WriteRune(table[c-0x80])
	}
	return &out, nil
}

// The upper halves of the single-byte charsets charsetReader decodes.
var latin1, cp1252, latin9 = func() (l1, w, l9 [128]rune) {
	for i := range 128 {
		l1[i] = rune(0x80 + i)
	}
	w, l9 = l1, l1
	// Windows-1252's 0x80-0x9f (undefined ones stay as Latin-1's controls,
	// which decodeWords replaces).
	for i, r := range []rune{0x20ac, 0, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0, 0x017d, 0,
		0, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0, 0x017e, 0x0178} {
		if r != 0 {
			w[i] = r
		}
	}
	// ISO-8859-15 differs from Latin-1 in eight places.
	for c, r := range map[byte]rune{0xa4: 0x20ac, 0xa6: 0x0160, 0xa8: 0x0161, 0xb4: 0x017d, 0xb8: 0x017e, 0xbc: 0x0152, 0xbd: 0x0153, 0xbe: 0x0178} {
		l9[c-0x80] = r
	}
	return l1, w, l9
}()

// hop is a client address a Received field names: the host that handed
// the message to the server that wrote the field.
type hop struct {
	IP string
	// Kind says what kind of address it is: "" for a public one;
	// "private", "loopback", "link-local" or "shared" (carrier-grade
	// NAT) otherwise, which name no one outside the provider's network.
	Kind string
	// First: the earliest Received field of its message names it (the
	// last one in the header): where the message started, as far as the
	// header tells (the sender can write fields below the provider's
	// own, so an early one may be made up).
	First bool
}

// maxHops bounds the Received fields read per message.
const maxHops = 20

// receivedHops returns the client addresses of a message's Received
// fields, earliest first.
func receivedHops(fields []headerField) []hop {
	var hops []hop
	n := 0
	for i := len(fields) - 1; i >= 0 && n < maxHops; i-- {
		if !strings.EqualFold(fields[i].Name, "Received") {
			continue
		}
		n++
		ip, ok := receivedFrom(fields[i].Value)
		if !ok {
			continue
		}
		hops = append(hops, hop{IP: ip.String(), Kind: addrKind(ip), First: n == 1})
	}
	return hops
}

// receivedFrom finds the address of the client a Received field names in
// its "from" clause, as MTAs write it:
//
//	from helo.name (rdns.name [203.0.113.9]) by ...    Postfix, Sendmail
//	from [192.168.1.20] (unknown [203.0.113.9]) by ... (the first is the HELO)
//	from rdns.name ([203.0.113.9]:52144 helo=x) by ... Exim
//	from [203.0.113.9] (helo=x) by ...                 Exim, no reverse name
//	from HOST (10.0.0.1) by ...                        Exchange
//
// An address in brackets inside the comment is the connection's, and
// wins over one outside it (which may be the client's HELO); a bare
// address inside the comment comes last.
func receivedFrom(v string) (netip.Addr, bool) {
	v = strings.TrimSpace(v)
	if len(v) < 5 || !strings.EqualFold(v[:5], "from ") {
		return netip.Addr{}, false
	}
	v = v[5:]
	// The from clause ends at " by " or ";" outside a comment.
	depth, end := 0, len(v)
scan:
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '(':
			depth++
		case ')':
			depth = max(depth-1, 0)
		case ';':
			if depth == 0 {
				end = i
				break scan
			}
		case ' ', '\t':
			if depth == 0 && len(v) >= i+4 && strings.EqualFold(v[i+1:i+3], "by") && (v[i+3] == ' ' || v[i+3] == '\t') {
				end = i
				break scan
			}
		}
	}
	clause := v[:end]
	var inner, outer, bare netip.Addr
	depth = 0
	for i := 0; i < len(clause); i++ {
		switch c := clause[i]; {
		case c == '(':
			depth++
		case c == ')':
			depth = max(depth-1, 0)
		case c == '[':
			j := strings.IndexByte(clause[i:], ']')
			if j < 0 {
				return pick(inner, outer, bare)
			}
			if a, ok := literal(clause[i+1 : i+j]); ok {
				if depth > 0 && !inner.IsValid() {
					inner = a
				} else if depth == 0 && !outer.IsValid() {
					outer = a
				}
			}
			i += j
		case depth > 0 && !bare.IsValid() && (c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':'):
			j := i
			for j < len(clause) && strings.IndexByte("0123456789abcdefABCDEF:.", clause[j]) >= 0 {
				j++
			}
			if a, err := netip.ParseAddr(clause[i:j]); err == nil && (i == 0 || !isWordByte(clause[i-1])) && (j == len(clause) || !isWordByte(clause[j])) {
				bare = a.Unmap()
			}
			i = j - 1
		}
	}
	return pick(inner, outer, bare)
}

func pick(addrs ...netip.Addr) (netip.Addr, bool) {
	for _, a := range addrs {
		if a.IsValid() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
}

// literal reads an address literal's content: "203.0.113.9",
// "IPv6:2001:db8::1", "203.0.113.9:52144" (Exim's port).
func literal(s string) (netip.Addr, bool) {
	if len(s) > 5 && strings.EqualFold(s[:5], "ipv6:") {
		s = s[5:]
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// cgnat is the shared address space of carrier-grade NAT (RFC 6598).
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// addrKind says whether an address is one only a private network uses.
func addrKind(a netip.Addr) string {
	switch {
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate():
		return "private"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case cgnat.Contains(a):
		return "shared"
	case a.IsUnspecified():
		return "unspecified"
	}
	return ""
}
