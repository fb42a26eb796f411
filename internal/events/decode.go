package events

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/aupd/aupd/rules"
)

// The decoder below reads a verdict event in one pass, without reflection:
// keys must be exactly the contract's (a key that differs only in case,
// such as "ACCOUNT", is refused rather than taken for "account"), a key may
// appear once, and the message object is checked but left undecoded until
// a sample needs it (Verdict.Msg).

// The fields of the contract, as bits.
const (
	fID = 1 << iota
	fTime
	fDirection
	fAccount
	fVerdict
	fScore
	fSource
	fMessage
	fSender
)

// topField is the bit of a top-level key of the contract (0: not one).
func topField(key []byte) int {
	switch string(key) {
	case "id":
		return fID
	case "time":
		return fTime
	case "direction":
		return fDirection
	case "account":
		return fAccount
	case "verdict":
		return fVerdict
	case "score":
		return fScore
	case "source":
		return fSource
	case "message":
		return fMessage
	case "sender":
		return fSender
	}
	return 0
}

// fieldName is the key of a field bit.
func fieldName(bit int) string { return topKeys[bits.TrailingZeros(uint(bit))] }

// otherCase returns the key of keys that k spells in another case, if
// any (k itself is not one of them).
func otherCase(k []byte, keys []string) (string, bool) {
	for _, key := range keys {
		if len(key) == len(k) && bytes.EqualFold(k, []byte(key)) {
			return key, true
		}
	}
	return "", false
}

// The keys of the contract: top-level ones in the order of their bits,
// and the optional ones of message (of which "to" is a list of strings).
var (
	topKeys     = []string{"id", "time", "direction", "account", "verdict", "score", "source", "message", "sender"}
	messageKeys = []string{"message_id", "from", "to", "subject", "date", "raw"}
	senderKeys  = []string{"ip", "login", "helo"}
	// the sender's keys as error messages name them.
	senderFields = []string{"sender.ip", "sender.login", "sender.helo"}
)

type decoder struct {
	data []byte
	pos  int
}

// syntaxError is an invalid_json error at the decoder's position.
func (d *decoder) syntaxError(what string) error {
	return invalid(ReasonInvalidJSON, "", "%s at byte %d", what, d.pos)
}

func (d *decoder) ws() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *decoder) peek() byte {
	d.ws()
	if d.pos < len(d.data) {
		return d.data[d.pos]
	}
	return 0
}

// strBytes reads a string at the position and returns its value: the
// payload's own bytes when it has no escapes (no copy), else a decoded
// copy.
func (d *decoder) strBytes() ([]byte, error) {
	start := d.pos
	raw, escaped, err := d.skipString()
	if err != nil || !escaped {
		return raw, err
	}
	var s string
	if err := json.Unmarshal(d.data[start:d.pos], &s); err != nil {
		return nil, invalid(ReasonInvalidJSON, "", "bad string escape at byte %d", start)
	}
	return []byte(s), nil
}

// skipString moves past a string and returns its raw content.
func (d *decoder) skipString() ([]byte, bool, error) {
	if d.pos >= len(d.data) || d.data[d.pos] != '"' {
		return nil, false, d.syntaxError("expected a string")
	}
	d.pos++
	start := d.pos
	escaped := false
	for d.pos < len(d.data) {
		// the plain run, in locals: the loop then keeps them in registers
		data, i := d.data, d.pos
		for i+8 <= len(data) && !anySpecial(binary.LittleEndian.Uint64(data[i:])) {
			i += 8
		}
		for i < len(data) && !stringSpecial[data[i]] {
			i++
		}
		d.pos = i
		if i == len(data) {
			break
		}
		c := data[i]
		switch {
		case c == '"':
			raw := d.data[start:d.pos]
			d.pos++
			return raw, escaped, nil
		case c == '\\':
			escaped = true
			d.pos++
			if d.pos >= len(d.data) {
				return nil, false, d.syntaxError("unterminated string")
			}
			switch d.data[d.pos] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				d.pos++
			case 'u':
				if d.pos+5 > len(d.data) {
					return nil, false, d.syntaxError("bad \\u escape")
				}
				for _, h := range d.data[d.pos+1 : d.pos+5] {
					if !isHex(h) {
						return nil, false, d.syntaxError("bad \\u escape")
					}
				}
				d.pos += 5
			default:
				return nil, false, d.syntaxError("bad escape")
			}
		case c < 0x20:
			return nil, false, d.syntaxError("control character in string")
		default:
			d.pos++
		}
	}
	return nil, false, d.syntaxError("unterminated string")
}

// stringSpecial marks the bytes that end a run of plain string content:
// the quote, the backslash and control characters.
var stringSpecial = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// anySpecial reports whether any of the 8 bytes in x is a stringSpecial
// one: below 0x20, '"' or '\\' (the zero-byte test of each, at once).
func anySpecial(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q, b := x^(ones*'"'), x^(ones*'\\')
	return ((x-ones*0x20)&^x|(q-ones)&^q|(b-ones)&^b)&highs != 0
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// number reads a JSON number and returns its text.
func (d *decoder) number() ([]byte, error) {
	start := d.pos
	if d.pos < len(d.data) && d.data[d.pos] == '-' {
		d.pos++
	}
	digits := func() int {
		n := 0
		for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
			d.pos++
			n++
		}
		return n
	}
	if d.pos < len(d.data) && d.data[d.pos] == '0' {
		d.pos++
	} else if digits() == 0 {
		return nil, d.syntaxError("bad number")
	}
	if d.pos < len(d.data) && d.data[d.pos] == '.' {
		d.pos++
		if digits() == 0 {
			return nil, d.syntaxError("bad number")
		}
	}
	if d.pos < len(d.data) && (d.data[d.pos] == 'e' || d.data[d.pos] == 'E') {
		d.pos++
		if d.pos < len(d.data) && (d.data[d.pos] == '+' || d.data[d.pos] == '-') {
			d.pos++
		}
		if digits() == 0 {
			return nil, d.syntaxError("bad number")
		}
	}
	return d.data[start:d.pos], nil
}

func (d *decoder) literal(lit string) error {
	if !strings.HasPrefix(string(d.data[d.pos:min(len(d.data), d.pos+len(lit))]), lit) {
		return d.syntaxError("invalid literal")
	}
	d.pos += len(lit)
	return nil
}

// skip moves past any value, checking its syntax, and returns its JSON
// kind for error messages. It skips values nested to any depth (an
// unknown field is ignored however deep it is; MaxPayload bounds it):
// the containers it is in are a stack of bits, one per level (1: an
// object), kept in an array on the stack for the first 512 levels and
// grown on the heap only past them.
func (d *decoder) skip() (string, error) {
	var small [8]uint64
	stack := small[:]
	depth := 0
	inObject := func() bool { return stack[(depth-1)/64]&(1<<((depth-1)%64)) != 0 }
	push := func(object bool) {
		if depth/64 == len(stack) {
			stack = append(stack, 0)
		}
		w, b := depth/64, uint64(1)<<(depth%64)
		if object {
			stack[w] |= b
		} else {
			stack[w] &^= b
		}
		depth++
	}
	// key reads an object member's key and its ':'.
	key := func() error {
		d.ws()
		if _, _, err := d.skipString(); err != nil {
			return err
		}
		if d.peek() != ':' {
			return d.syntaxError("expected ':'")
		}
		d.pos++
		return nil
	}
	kind := ""
	for {
		// A value.
		c := d.peek()
		if kind == "" {
			switch {
			case c == '"':
				kind = "string"
			case c == '{':
				kind = "object"
			case c == '[':
				kind = "array"
			case c == 't' || c == 'f':
				kind = "bool"
			case c == 'n':
				kind = "null"
			case c == '-' || c >= '0' && c <= '9':
				kind = "number"
			}
		}
		var err error
		switch {
		case c == '"':
			_, _, err = d.skipString()
		case c == '{':
			d.pos++
			if d.peek() == '}' {
				d.pos++
				break
			}
			push(true)
			if err := key(); err != nil {
				return "", err
			}
			continue
		case c == '[':
			d.pos++
			if d.peek() == ']' {
				d.pos++
				break
			}
			push(false)
			continue
		case c == 't':
			err = d.literal("true")
		case c == 'f':
			err = d.literal("false")
		case c == 'n':
			err = d.literal("null")
		case c == '-' || c >= '0' && c <= '9':
			_, err = d.number()
		case c == 0:
			return "", d.syntaxError("unexpected end")
		default:
			return "", d.syntaxError("unexpected character")
		}
		if err != nil {
			return "", err
		}
		// After a value: close the containers it ends, or go on to the
		// next member or element.
		for {
			if depth == 0 {
				return kind, nil
			}
			c := d.peek()
			if c == ',' {
				d.pos++
				if inObject() {
					if err := key(); err != nil {
						return "", err
					}
				}
				break
			}
			if inObject() {
				if c != '}' {
					return "", d.syntaxError("expected ',' or '}'")
				}
			} else if c != ']' {
				return "", d.syntaxError("expected ',' or ']'")
			}
			d.pos++
			depth--
		}
	}
}

// members calls fn for each member of the object at the position, with
// the decoded key (valid during the call only); fn must consume the value.
func (d *decoder) members(fn func(key []byte) error) error {
	if d.peek() != '{' {
		return d.syntaxError("expected an object")
	}
	d.pos++
	if d.peek() == '}' {
		d.pos++
		return nil
	}
	for {
		d.ws()
		key, err := d.strBytes()
		if err != nil {
			return err
		}
		if d.peek() != ':' {
			return d.syntaxError("expected ':'")
		}
		d.pos++
		d.ws()
		if err := fn(key); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return nil
		default:
			return d.syntaxError("expected ',' or '}'")
		}
	}
}

// stringField reads a string value of field (see strBytes), or tells
// what it was instead.
func (d *decoder) stringField(field string) ([]byte, bool, error) {
	switch d.peek() {
	case '"':
		s, err := d.strBytes()
		return s, true, err
	case 'n':
		return nil, false, d.literal("null")
	}
	kind, err := d.skip()
	if err != nil {
		return nil, false, err
	}
	return nil, false, invalid(ReasonInvalidField, field, "expected string, got JSON %s", kind)
}

// intern returns the one of known that b spells, without allocating, or
// a copy of b.
func intern[S ~string](b []byte, known ...S) S {
	for _, k := range known {
		if string(b) == string(k) {
			return k
		}
	}
	return S(b)
}

// decodeVerdict decodes an event in one pass. Required fields that are
// missing or null are reported after the syntax of the whole payload is
// known to be valid, as encoding/json would.
func decodeVerdict(data []byte) (*Verdict, error) {
	d := &decoder{data: data}
	v := &Verdict{}
	var seen int
	var typeErr error // the first wrong type or value; reported once the syntax is checked
	note := func(err error) error {
		if _, ok := AsInvalid(err); ok && isFieldError(err) {
			if typeErr == nil {
				typeErr = err
			}
			return nil
		}
		return err
	}
	err := d.members(func(key []byte) error {
		bit := topField(key)
		if bit == 0 {
			if l, clash := otherCase(key, topKeys); clash {
				_ = note(invalid(ReasonInvalidField, l, "key %q must be spelled %q", clip(string(key), 40), l))
			}
			_, err := d.skip()
			return err
		}
		if seen&bit != 0 {
			_ = note(invalid(ReasonInvalidField, fieldName(bit), "appears more than once"))
		}
		seen |= bit
		switch bit {
		case fScore:
			switch c := d.peek(); {
			case c == 'n':
				return d.literal("null")
			case c == '-' || c >= '0' && c <= '9':
				num, err := d.number()
				if err != nil {
					return err
				}
				f, err := strconv.ParseFloat(string(num), 64)
				if err != nil {
					return note(invalid(ReasonInvalidField, "score", "number out of range"))
				}
				v.Score = &f
				return nil
			}
			kind, err := d.skip()
			if err != nil {
				return err
			}
			return note(invalid(ReasonInvalidField, "score", "expected number, got JSON %s", kind))
		case fMessage:
			start := d.pos
			if d.peek() == 'n' {
				return d.literal("null")
			}
			if d.peek() != '{' {
				kind, err := d.skip()
				if err != nil {
					return err
				}
				return note(invalid(ReasonInvalidField, "message", "expected object, got JSON %s", kind))
			}
			if err := d.checkMessage(v, note); err != nil {
				return err
			}
			v.msg = data[start:d.pos]
			return nil
		case fSender:
			if d.peek() == 'n' {
				return d.literal("null")
			}
			if d.peek() != '{' {
				kind, err := d.skip()
				if err != nil {
					return err
				}
				return note(invalid(ReasonInvalidField, "sender", "expected object, got JSON %s", kind))
			}
			return d.sender(v, note)
		}
		s, present, err := d.stringField(fieldName(bit))
		if err != nil {
			return note(err)
		}
		if !present {
			seen &^= bit // null: as if absent
			return nil
		}
		switch bit {
		case fID:
			v.ID = string(s)
		case fTime:
			// the strict RFC 3339 of encoding/json
			if err := v.Time.UnmarshalText(s); err != nil {
				return note(invalid(ReasonInvalidField, "time", "not an RFC 3339 timestamp"))
			}
		case fDirection:
			v.Direction = intern(s, rules.Outbound, rules.Inbound, rules.Complaint)
		case fAccount:
			v.Account = string(s)
		case fVerdict:
			v.Verdict = intern(s, rules.Spam, rules.Phish, rules.Virus, rules.Ham)
		case fSource:
			v.Source = intern(s, "rspamd", "arf")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if d.ws(); d.pos != len(d.data) {
		return nil, d.syntaxError("data after the object")
	}
	for _, f := range required {
		if seen&topField([]byte(f)) == 0 {
			if ie, ok := AsInvalid(typeErr); ok && ie.Field == f {
				return nil, typeErr // spelled in another case: say so
			}
			return nil, invalid(ReasonMissingField, f, "required field is missing")
		}
	}
	if typeErr != nil {
		return nil, typeErr
	}
	return v, nil
}

func isFieldError(err error) bool {
	ie, ok := AsInvalid(err)
	return ok && ie.Reason == ReasonInvalidField
}

// checkMessage checks the message object's syntax and the types of its
// known fields, decoding nothing.
func (d *decoder) checkMessage(v *Verdict, note func(error) error) error {
	var seen uint
	return d.members(func(kb []byte) error {
		i := slices.Index(messageKeys, string(kb))
		if i < 0 {
			if l, clash := otherCase(kb, messageKeys); clash {
				_ = note(invalid(ReasonInvalidField, "message."+l, "key %q must be spelled %q", clip(string(kb), 40), l))
			}
			_, err := d.skip()
			return err
		}
		key, list := messageKeys[i], messageKeys[i] == "to"
		if seen&(1<<i) != 0 {
			_ = note(invalid(ReasonInvalidField, "message."+key, "appears more than once"))
		}
		seen |= 1 << i
		want := "string"
		if list {
			want = "array"
		}
		start := d.pos
		kind, err := d.skip()
		if err != nil {
			return err
		}
		if kind == "null" {
			return nil
		}
		if kind == "string" && (key == "subject" || key == "raw") {
			// the JSON text between the quotes, for Fingerprint
			span := d.data[start+1 : d.pos-1]
			if key == "subject" {
				v.subject = span
			} else {
				v.raw = span
			}
		}
		if kind != want {
			return note(invalid(ReasonInvalidField, "message."+key, "expected %s, got JSON %s", want, kind))
		}
		if list {
			// every element a string
			e := &decoder{data: d.data[:d.pos], pos: start + 1}
			for e.peek() != ']' {
				if k, _ := e.skip(); k != "string" {
					return note(invalid(ReasonInvalidField, "message."+key, "expected array of strings, got JSON %s in it", k))
				}
				if e.peek() == ',' {
					e.pos++
				}
			}
		}
		return nil
	})
}

// sender decodes the sender object: its known fields are strings (or
// null), checked as they are read; the others are skipped.
func (d *decoder) sender(v *Verdict, note func(error) error) error {
	var s Sender
	var seen uint
	err := d.members(func(kb []byte) error {
		i := slices.Index(senderKeys, string(kb))
		if i < 0 {
			if l, clash := otherCase(kb, senderKeys); clash {
				_ = note(invalid(ReasonInvalidField, "sender."+l, "key %q must be spelled %q", clip(string(kb), 40), l))
			}
			_, err := d.skip()
			return err
		}
		field := senderFields[i]
		if seen&(1<<i) != 0 {
			_ = note(invalid(ReasonInvalidField, field, "appears more than once"))
		}
		seen |= 1 << i
		b, present, err := d.stringField(field)
		if err != nil || !present {
			return note(err)
		}
		switch i {
		case 0:
			text := string(b)
			ip, err := netip.ParseAddr(text)
			if err != nil || ip.Zone() != "" {
				return note(invalid(ReasonInvalidField, field, "%q is not an IP address", clip(text, 60)))
			}
			// IPv4 parses only in its one form; IPv6 has several.
			if s.IP = text; !ip.Is4() {
				s.IP = ip.Unmap().String()
			}
		case 1:
			if err := senderText(b, MaxLogin); err != nil {
				return note(invalid(ReasonInvalidField, field, "%v", err))
			}
			s.Login = string(b)
		case 2:
			if err := senderText(b, MaxHelo); err != nil {
				return note(invalid(ReasonInvalidField, field, "%v", err))
			}
			s.Helo = string(b)
		}
		return nil
	})
	if err == nil && s != (Sender{}) {
		v.Sender = &s
	}
	return err
}

// senderText checks a login or HELO name: at most max bytes, no control
// characters.
func senderText(b []byte, max int) error {
	if len(b) > max {
		return fmt.Errorf("longer than %d bytes", max)
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return errors.New("holds a control character")
		}
	}
	return nil
}
