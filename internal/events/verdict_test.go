package events

import (
	"bytes"
	"encoding/json"
	"hash/crc32"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

const good = `{"id":"e1","time":"2026-11-21T11:00:00Z","direction":"outbound","account":"Alice@Example.COM","verdict":"spam","score":9.5,"source":"f1","new_optional_field":{"x":1},"message":{"subject":"s","to":["b@example.net"],"raw":"Subject: s\r\n\r\nbody"}}`

func TestParseVerdict(t *testing.T) {
	v, err := ParseVerdict("aup.verdict.outbound", []byte(good), now, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if v.Account != "alice@example.com" || v.ID != "e1" || *v.Score != 9.5 || v.Msg() == nil || v.Msg().To[0] != "b@example.net" || v.Msg().Subject != "s" {
		t.Fatalf("%+v", v)
	}
	tests := []struct {
		name, subject, data, reason, field string
	}{
		{"not json", "aup.verdict.outbound", `{"id":`, ReasonInvalidJSON, ""},
		{"array", "aup.verdict.outbound", `[1,2]`, ReasonUnsupportedType, ""},
		{"invalid utf8", "aup.verdict.outbound", "{\"id\":\"\xff\"}", ReasonInvalidUTF8, ""},
		{"missing id", "aup.verdict.outbound", strings.Replace(good, `"id":"e1",`, "", 1), ReasonMissingField, "id"},
		{"null account", "aup.verdict.outbound", strings.Replace(good, `"Alice@Example.COM"`, "null", 1), ReasonMissingField, "account"},
		{"score as string", "aup.verdict.outbound", strings.Replace(good, `9.5`, `"9.5"`, 1), ReasonInvalidField, "score"},
		{"bad time", "aup.verdict.outbound", strings.Replace(good, `2026-11-21T11:00:00Z`, `yesterday`, 1), ReasonInvalidField, "time"},
		{"far future", "aup.verdict.outbound", strings.Replace(good, `2026-11-21T11:00:00Z`, `2026-11-21T12:06:00Z`, 1), ReasonTimeInFuture, "time"},
		{"unknown verdict", "aup.verdict.outbound", strings.Replace(good, `"spam"`, `"bacon"`, 1), ReasonInvalidField, "verdict"},
		{"direction vs subject", "aup.verdict.inbound", good, ReasonDirectionClash, "direction"},
		{"unknown subject", "aup.verdict.sideways", good, ReasonUnknownSubject, ""},
		{"redacted local part", "aup.verdict.outbound", strings.Replace(good, `"Alice@Example.COM"`, `"xxxxxxx@example.com"`, 1), ReasonRedacted, "account"},
		{"redacted in capitals", "aup.verdict.outbound", strings.Replace(good, `"Alice@Example.COM"`, `"XXX@example.com"`, 1), ReasonRedacted, "account"},
		{"redacted by name", "aup.verdict.outbound", strings.Replace(good, `"Alice@Example.COM"`, `"Redacted@example.com"`, 1), ReasonRedacted, "account"},
		{"redacted by stars", "aup.verdict.outbound", strings.Replace(good, `"Alice@Example.COM"`, `"*****@example.com"`, 1), ReasonRedacted, "account"},
		{"display name", "aup.verdict.outbound", strings.Replace(good, `"Alice@Example.COM"`, `"Alice <a@example.com>"`, 1), ReasonInvalidField, "account"},
		{"header injection in account", "aup.verdict.outbound", strings.Replace(good, `"Alice@Example.COM"`, `"a@example.com\r\nBcc: x@evil.test"`, 1), ReasonInvalidField, "account"},
		{"id too long", "aup.verdict.outbound", strings.Replace(good, `"e1"`, `"`+strings.Repeat("x", 129)+`"`, 1), ReasonInvalidField, "id"},
		{"too large", "aup.verdict.outbound", `{"id":"` + strings.Repeat("x", MaxPayload) + `"}`, ReasonTooLarge, ""},
		{"key in another case", "aup.verdict.outbound", strings.Replace(good, `"source":"f1"`, `"ACCOUNT":"mallory@example.com"`, 1), ReasonInvalidField, "account"},
		{"key in another case alone", "aup.verdict.outbound", strings.Replace(good, `"account"`, `"Account"`, 1), ReasonInvalidField, "account"},
		{"duplicate key", "aup.verdict.outbound", strings.Replace(good, `"source":"f1"`, `"account":"mallory@example.com"`, 1), ReasonInvalidField, "account"},
		{"duplicate id", "aup.verdict.outbound", strings.Replace(good, `"source":"f1"`, `"id":"e2"`, 1), ReasonInvalidField, "id"},
		{"message not an object", "aup.verdict.outbound", strings.Replace(good, `{"subject":"s","to":["b@example.net"],"raw":"Subject: s\r\n\r\nbody"}`, `"hello"`, 1), ReasonInvalidField, "message"},
		{"message.to not a list", "aup.verdict.outbound", strings.Replace(good, `["b@example.net"]`, `"b@example.net"`, 1), ReasonInvalidField, "message.to"},
		{"message.to with a number", "aup.verdict.outbound", strings.Replace(good, `["b@example.net"]`, `["b@example.net",5]`, 1), ReasonInvalidField, "message.to"},
		{"message.subject a number", "aup.verdict.outbound", strings.Replace(good, `"subject":"s"`, `"subject":5`, 1), ReasonInvalidField, "message.subject"},
		{"message key in another case", "aup.verdict.outbound", strings.Replace(good, `"subject":"s"`, `"Subject":"s"`, 1), ReasonInvalidField, "message.subject"},
		{"data after the object", "aup.verdict.outbound", good + `{}`, ReasonInvalidJSON, ""},
		{"trailing comma", "aup.verdict.outbound", strings.Replace(good, `}}`, `},}`, 1), ReasonInvalidJSON, ""},
		{"unquoted key", "aup.verdict.outbound", `{id:"x"}`, ReasonInvalidJSON, ""},
		{"bad escape", "aup.verdict.outbound", strings.Replace(good, `"e1"`, `"e\x1"`, 1), ReasonInvalidJSON, ""},
		{"control character", "aup.verdict.outbound", strings.Replace(good, `"e1"`, "\"e\x01\"", 1), ReasonInvalidJSON, ""},
		{"deep nesting unclosed", "aup.verdict.outbound", strings.Replace(good, `{"x":1}`, strings.Repeat("[", 100)+strings.Repeat("]", 99), 1), ReasonInvalidJSON, ""},
		{"deep nesting mismatched", "aup.verdict.outbound", strings.Replace(good, `{"x":1}`, strings.Repeat(`[{"a":`, 100)+"1"+strings.Repeat("]}", 100), 1), ReasonInvalidJSON, ""},
		{"deep object missing a colon", "aup.verdict.outbound", strings.Replace(good, `{"x":1}`, strings.Repeat(`{"a":`, 70)+`{"b" 1}`+strings.Repeat("}", 70), 1), ReasonInvalidJSON, ""},
		{"deep trailing comma", "aup.verdict.outbound", strings.Replace(good, `{"x":1}`, strings.Repeat("[", 70)+"1,"+strings.Repeat("]", 70), 1), ReasonInvalidJSON, ""},
		{"leading zero", "aup.verdict.outbound", strings.Replace(good, `9.5`, `09.5`, 1), ReasonInvalidJSON, ""},
		{"sender not an object", "aup.verdict.outbound", withSender(`"203.0.113.9"`), ReasonInvalidField, "sender"},
		{"sender.ip a number", "aup.verdict.outbound", withSender(`{"ip":3405803785}`), ReasonInvalidField, "sender.ip"},
		{"sender.ip not an address", "aup.verdict.outbound", withSender(`{"ip":"203.0.113.999"}`), ReasonInvalidField, "sender.ip"},
		{"sender.ip a host name", "aup.verdict.outbound", withSender(`{"ip":"mail.example.net"}`), ReasonInvalidField, "sender.ip"},
		{"sender.ip with a port", "aup.verdict.outbound", withSender(`{"ip":"203.0.113.9:587"}`), ReasonInvalidField, "sender.ip"},
		{"sender.ip in brackets", "aup.verdict.outbound", withSender(`{"ip":"[2001:db8::1]"}`), ReasonInvalidField, "sender.ip"},
		{"sender.ip with a zone", "aup.verdict.outbound", withSender(`{"ip":"fe80::1%eth0"}`), ReasonInvalidField, "sender.ip"},
		{"sender.login a list", "aup.verdict.outbound", withSender(`{"login":["alice"]}`), ReasonInvalidField, "sender.login"},
		{"sender.login too long", "aup.verdict.outbound", withSender(`{"login":"` + strings.Repeat("a", MaxLogin+1) + `"}`), ReasonInvalidField, "sender.login"},
		{"sender.login with a line break", "aup.verdict.outbound", withSender(`{"login":"alice\r\nBcc: x"}`), ReasonInvalidField, "sender.login"},
		{"sender.helo an object", "aup.verdict.outbound", withSender(`{"helo":{}}`), ReasonInvalidField, "sender.helo"},
		{"sender.helo too long", "aup.verdict.outbound", withSender(`{"helo":"` + strings.Repeat("h", MaxHelo+1) + `"}`), ReasonInvalidField, "sender.helo"},
		{"sender key in another case", "aup.verdict.outbound", withSender(`{"IP":"203.0.113.9"}`), ReasonInvalidField, "sender.ip"},
		{"sender key twice", "aup.verdict.outbound", withSender(`{"ip":"203.0.113.9","ip":"192.0.2.1"}`), ReasonInvalidField, "sender.ip"},
		{"sender twice", "aup.verdict.outbound", strings.Replace(withSender(`{"ip":"203.0.113.9"}`), `"source":"f1"`, `"sender":{}`, 1), ReasonInvalidField, "sender"},
		{"sender syntax", "aup.verdict.outbound", withSender(`{"ip":"203.0.113.9",}`), ReasonInvalidJSON, ""},
	}
	for _, tt := range tests {
		_, err := ParseVerdict(tt.subject, []byte(tt.data), now, 5*time.Minute)
		ie, ok := AsInvalid(err)
		if !ok {
			t.Errorf("%s: error %v is not an InvalidError", tt.name, err)
			continue
		}
		if ie.Reason != tt.reason || ie.Field != tt.field {
			t.Errorf("%s: reason %s field %q, want %s %q (%v)", tt.name, ie.Reason, ie.Field, tt.reason, tt.field, err)
		}
	}
}

// withSender is good with a sender field of the given JSON text.
func withSender(sender string) string {
	return strings.Replace(good, `"score":9.5`, `"score":9.5,"sender":`+sender, 1)
}

// TestParseVerdictSender decodes the optional sender: its fields,
// addresses in canonical form, null and empty objects as no sender, and
// unknown keys in it ignored.
func TestParseVerdictSender(t *testing.T) {
	tests := []struct {
		sender string
		want   *Sender
	}{
		{`{"ip":"203.0.113.9","login":"alice@example.com","helo":"[192.0.2.7]"}`, &Sender{IP: "203.0.113.9", Login: "alice@example.com", Helo: "[192.0.2.7]"}},
		{`{"ip":"2001:DB8:0:0::1"}`, &Sender{IP: "2001:db8::1"}},
		{`{"ip":"::ffff:198.51.100.4"}`, &Sender{IP: "198.51.100.4"}},
		{`{"login":"Alice","future":[1,{"x":null}]}`, &Sender{Login: "Alice"}},
		{`{"login":"\u00e9lo\"d"}`, &Sender{Login: "élo\"d"}},
		{`{"ip":null,"login":null,"helo":null}`, nil},
		{`{}`, nil},
		{`null`, nil},
	}
	for _, tt := range tests {
		v, err := ParseVerdict("aup.verdict.outbound", []byte(withSender(tt.sender)), now, 5*time.Minute)
		if err != nil {
			t.Fatalf("%s: %v", tt.sender, err)
		}
		if !reflect.DeepEqual(v.Sender, tt.want) {
			t.Errorf("%s: sender %+v, want %+v", tt.sender, v.Sender, tt.want)
		}
	}
	// No sender: nil, and none in the event's JSON encoding.
	v, err := ParseVerdict("aup.verdict.outbound", []byte(good), now, 5*time.Minute)
	if err != nil || v.Sender != nil {
		t.Fatalf("sender %+v err %v", v.Sender, err)
	}
	if b, _ := json.Marshal(v); bytes.Contains(b, []byte("sender")) {
		t.Fatalf("encoded %s", b)
	}
}

// TestParseVerdictMatchesEncodingJSON: what the one-pass decoder accepts
// decodes exactly as encoding/json decodes it, escapes and all.
func TestParseVerdictMatchesEncodingJSON(t *testing.T) {
	for _, data := range []string{
		good,
		`{"id":"\u00e9t\u00e9-1","time":"2026-11-21T11:00:00.123456789+01:00","direction":"outbound","account":"a.b+c@example.com","verdict":"phish","score":-1e2,"message":null,"source":null}`,
		`  {"verdict":"ham","account":"x@y.example","direction":"outbound","time":"2026-11-21T11:00:00Z","id":"\"q\"\\/","extra":[1,{"a":[true,false,null]}]}  `,
		withSender(`{"ip":"2001:db8::7","login":"al\u0069ce","helo":"client.example.net","x":1}`),
	} {
		v, err := ParseVerdict("aup.verdict.outbound", []byte(data), now, 5*time.Minute)
		if err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		var want Verdict
		if err := json.Unmarshal([]byte(data), &want); err != nil {
			t.Fatal(err)
		}
		want.Account = strings.ToLower(want.Account)
		v.Msg()
		v.subject, v.raw = nil, nil // the spans Fingerprint reads
		if !reflect.DeepEqual(v, &want) {
			t.Fatalf("decoded\n%+v\nwant\n%+v", v, &want)
		}
	}
}

// TestParseVerdictSkipsDeepUnknown checks that an unknown field is
// ignored however deeply it nests (docs/events.md: unknown fields are
// ignored), at the top level and in message, and that the skipped value
// is still checked against encoding/json's idea of valid JSON.
func TestParseVerdictSkipsDeepUnknown(t *testing.T) {
	now := time.Date(2026, 11, 21, 11, 30, 0, 0, time.UTC)
	nest := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i%2 == 0 {
				b.WriteString(`{"k":[1,"s",`)
			} else {
				b.WriteString(`[true,null,{"a":{}},`)
			}
		}
		b.WriteString(`-1.5e3`)
		for i := n - 1; i >= 0; i-- {
			if i%2 == 0 {
				b.WriteString(`]}`)
			} else {
				b.WriteString(`]`)
			}
		}
		return b.String()
	}
	for _, depth := range []int{1, 63, 64, 65, 66, 600, 5000} {
		for _, where := range []string{"top", "message"} {
			data := strings.Replace(good, `{"x":1}`, nest(depth), 1)
			if where == "message" {
				data = strings.Replace(good, `"subject":"s"`, `"unknown":`+nest(depth)+`,"subject":"s"`, 1)
			}
			if !json.Valid([]byte(data)) {
				t.Fatalf("depth %d: the test's JSON is invalid", depth)
			}
			v, err := ParseVerdict("aup.verdict.outbound", []byte(data), now, 5*time.Minute)
			if err != nil {
				t.Errorf("depth %d in %s: %v", depth, where, err)
				continue
			}
			if v.ID != "e1" || v.Account != "alice@example.com" {
				t.Errorf("depth %d in %s: decoded id %q account %q", depth, where, v.ID, v.Account)
			}
		}
	}
	// Deeper than encoding/json goes, up to the size limit.
	deep := strings.Replace(good, `{"x":1}`, strings.Repeat("[", 400000)+strings.Repeat("]", 400000), 1)
	if _, err := ParseVerdict("aup.verdict.outbound", []byte(deep), now, 5*time.Minute); err != nil {
		t.Errorf("400000 levels: %v", err)
	}
	// Broken at depth: refused as invalid_json, never accepted.
	for _, bad := range []string{
		strings.Repeat("[", 70) + strings.Repeat("]", 69),
		strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("]", 70),
		strings.Repeat("[", 70) + "1 2" + strings.Repeat("]", 70),
		strings.Repeat("[", 70) + strings.Repeat("]", 71),
		strings.Repeat(`{"a":`, 70) + `{1:2}` + strings.Repeat("}", 70),
	} {
		data := strings.Replace(good, `{"x":1}`, bad, 1)
		_, err := ParseVerdict("aup.verdict.outbound", []byte(data), now, 5*time.Minute)
		if ie, ok := AsInvalid(err); !ok || ie.Reason != ReasonInvalidJSON || json.Valid([]byte(data)) {
			t.Errorf("%.60q...: %v (valid per encoding/json: %v)", bad, err, json.Valid([]byte(data)))
		}
	}
}

func TestRedacted(t *testing.T) {
	for addr, want := range map[string]bool{
		"xxxxxxx@example.com": true, "XXX@example.com": true, "xXx@example.com": true, "***@example.com": true,
		"redacted@example.com": true, "REDACTED@example.com": true,
		"xx@example.com": false, "x@example.com": false, "max@example.com": false, "xxx.x@example.com": false,
		"x*x@example.com": false, "xxxy@example.com": false, "alice@xxxxx.com": false, "redacted2@example.com": false, "": false,
	} {
		if got := Redacted(addr); got != want {
			t.Errorf("Redacted(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestParseVerdictFutureWithinSkew(t *testing.T) {
	data := strings.Replace(good, `2026-11-21T11:00:00Z`, `2026-11-21T12:04:59Z`, 1)
	if _, err := ParseVerdict("aup.verdict.outbound", []byte(data), now, 5*time.Minute); err != nil {
		t.Fatalf("4m59s ahead with 5m skew: %v", err)
	}
}

// FuzzParseVerdict: any payload either parses into a valid event with a
// normalized account, or fails with a machine-readable reason; it never
// panics.
func FuzzParseVerdict(f *testing.F) {
	f.Add("aup.verdict.outbound", []byte(good))
	f.Add("aup.verdict.inbound", []byte(`{"id":"x","time":"2026-11-21T11:00:00Z","direction":"inbound","account":"a@b.c","verdict":"ham"}`))
	f.Add("aup.verdict.complaint", []byte(`{}`))
	f.Add("aup.verdict.outbound", []byte("{\"id\":\"\xff\"}"))
	f.Add("aup.verdict.outbound", []byte(withSender(`{"ip":"::ffff:192.0.2.1","login":"a","helo":"h"}`)))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		v, err := ParseVerdict(subject, data, now, 5*time.Minute)
		if err != nil {
			ie, ok := AsInvalid(err)
			if !ok || ie.Reason == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if _, err := NormalizeAccount(v.Account); err != nil || v.Account != strings.ToLower(v.Account) {
			t.Fatalf("accepted account %q", v.Account)
		}
		if !v.Direction.Valid() || !v.Verdict.Valid() || !strings.HasSuffix(subject, string(v.Direction)) {
			t.Fatalf("accepted %+v on %s", v, subject)
		}
		if n := utf8.RuneCountInString(v.ID); n < 1 || n > MaxIDLen || v.Time.After(now.Add(5*time.Minute)) {
			t.Fatalf("accepted id %q time %s", v.ID, v.Time)
		}
		if strings.ContainsAny(v.Account, "\r\n") {
			t.Fatalf("account with a line break: %q", v.Account)
		}
		// What the one-pass decoder accepts, encoding/json decodes alike.
		var want Verdict
		if err := json.Unmarshal(data, &want); err != nil {
			if strings.Contains(err.Error(), "exceeded max depth") {
				// encoding/json stops at 10000 levels; unknown fields
				// are skipped at any depth.
				return
			}
			t.Fatalf("accepted what encoding/json refuses (%v): %q", err, data)
		}
		if want.ID != v.ID || !want.Time.Equal(v.Time) || strings.ToLower(want.Account) != v.Account || want.Verdict != v.Verdict || want.Source != v.Source {
			t.Fatalf("decoded %+v, encoding/json %+v", v, want)
		}
		// A sender: an address that parses, in canonical form, and text
		// within its bounds without control characters.
		if s := v.Sender; s != nil {
			if *s == (Sender{}) {
				t.Fatal("an empty sender is not nil")
			}
			if ip, err := netip.ParseAddr(s.IP); s.IP != "" && (err != nil || ip.String() != s.IP || ip.Is4In6()) {
				t.Fatalf("accepted sender ip %q", s.IP)
			}
			if len(s.Login) > MaxLogin || len(s.Helo) > MaxHelo || strings.ContainsAny(s.Login+s.Helo, "\r\n\x00") {
				t.Fatalf("accepted sender %+v", s)
			}
		}
		// The worker fingerprints every counting event: from the JSON text
		// as it came, whatever it holds, decoding nothing.
		v.Fingerprint()
		if v.Message != nil {
			t.Fatal("Fingerprint decoded the message")
		}
	})
}

// TestUpdateLower: the table loop and the fallback give CRC-32C of the
// lower-cased text, from any starting value.
func TestUpdateLower(t *testing.T) {
	for _, s := range []string{"", "a", "Cheap MEDS @ 50% [OFF]", "Günstig", "ABC Ärger xyz", strings.Repeat("Zz{@`", 40), "\xff\xfeA"} {
		for _, crc := range []uint32{0, 0xdeadbeef} {
			want := crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), bytes.ToLower([]byte(s)))
			if got := updateLower(crc, []byte(s)); got != want {
				t.Errorf("updateLower(%08x, %q) = %08x, want %08x", crc, s, got, want)
			}
		}
	}
}

// TestFingerprint: copies of one campaign (other recipients, other
// Message-IDs) fingerprint alike, other content differs, and it needs no
// decode of the message.
func TestFingerprint(t *testing.T) {
	ev := func(subject, headers, body string) *Verdict {
		m, _ := json.Marshal(map[string]any{"subject": subject, "raw": headers + "\r\n\r\n" + body})
		data := `{"id":"x","time":"2026-11-21T11:00:00Z","direction":"outbound","account":"a@example.com","verdict":"spam","message":` + string(m) + `}`
		v, err := ParseVerdict("aup.verdict.outbound", []byte(data), now, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	a := ev("Cheap meds", "To: x@example.net\r\nMessage-ID: <1@a>", "Buy now")
	b := ev(" cheap MEDS ", "To: y@example.org\r\nMessage-ID: <2@a>", "Buy now")
	c := ev("Cheap meds", "To: x@example.net", "Something else")
	if a.Fingerprint() == 0 || a.Fingerprint() != b.Fingerprint() || a.Fingerprint() == c.Fingerprint() {
		t.Fatalf("fingerprints %08x %08x %08x", a.Fingerprint(), b.Fingerprint(), c.Fingerprint())
	}
	if a.Message != nil {
		t.Fatal("Fingerprint decoded the message")
	}
	if (&Verdict{}).Fingerprint() != 0 {
		t.Fatal("a fingerprint without a message")
	}
	// A built event fingerprints as its parsed copy does.
	built := &Verdict{Message: &Message{Subject: "Cheap meds", Raw: "To: z@example.com\r\n\r\nBuy now"}}
	if built.Fingerprint() != a.Fingerprint() {
		t.Errorf("built event %08x, parsed %08x", built.Fingerprint(), a.Fingerprint())
	}
	// Past the ASCII fast path: a subject with non-ASCII letters
	// fingerprints as its lower case.
	long := strings.Repeat("Viagra Günstig ", 10)
	if f, g := ev(long, "", "x").Fingerprint(), ev(strings.ToLower(long), "", "x").Fingerprint(); f != g {
		t.Errorf("subject %q: %08x, its lower case %08x", long, f, g)
	}
	// Only the first 4 KiB of the body count.
	head := strings.Repeat("b", fingerprintBody)
	if ev("s", "", head+"tail one").Fingerprint() != ev("s", "", head+"tail two").Fingerprint() {
		t.Error("a body's end past 4 KiB changed its fingerprint")
	}
	if ev("s", "", head[1:]+"1").Fingerprint() == ev("s", "", head[1:]+"2").Fingerprint() {
		t.Error("a body's last counted byte did not change its fingerprint")
	}
}
