package events

import (
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
	if v.Account != "alice@example.com" || v.ID != "e1" || *v.Score != 9.5 || v.Message.To[0] != "b@example.net" {
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
		{"display name", "aup.verdict.outbound", strings.Replace(good, `"Alice@Example.COM"`, `"Alice <a@example.com>"`, 1), ReasonInvalidField, "account"},
		{"header injection in account", "aup.verdict.outbound", strings.Replace(good, `"Alice@Example.COM"`, `"a@example.com\r\nBcc: x@evil.test"`, 1), ReasonInvalidField, "account"},
		{"id too long", "aup.verdict.outbound", strings.Replace(good, `"e1"`, `"`+strings.Repeat("x", 129)+`"`, 1), ReasonInvalidField, "id"},
		{"too large", "aup.verdict.outbound", `{"id":"` + strings.Repeat("x", MaxPayload) + `"}`, ReasonTooLarge, ""},
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
	})
}
