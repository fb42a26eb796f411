package events

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkParseVerdict decodes and validates a typical verdict event of
// about 450 bytes, as the consumer does for every message.
func BenchmarkParseVerdict(b *testing.B) {
	now := time.Now()
	raw := "From: user000123@example.com\r\nSubject: WIN a FREE cruise today!!!\r\n\r\nHello, see https://example.net/5f1c0a9e2b7d4c31\r\n"
	data := fmt.Appendf(nil, `{"id":"e-00012345-9c2f71d0a4b86e13","time":%q,"direction":"outbound","account":"user000123@example.com","verdict":"spam","score":9.5,"source":"rspamd",`+
		`"message":{"message_id":"<7a3e91c0d2f84b65@mx.example.com>","subject":"WIN a FREE cruise today!!!","from":"user000123@example.com","to":["x@example.net"],"raw":%q}}`,
		now.Add(-time.Minute).UTC().Format(time.RFC3339Nano), raw)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseVerdict("aup.verdict.outbound", data, now, 5*time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseVerdictSender is BenchmarkParseVerdict's event with a
// sender, as deploy/rspamd's exporter sends it for outbound mail.
func BenchmarkParseVerdictSender(b *testing.B) {
	now := time.Now()
	raw := "From: user000123@example.com\r\nSubject: WIN a FREE cruise today!!!\r\n\r\nHello, see https://example.net/5f1c0a9e2b7d4c31\r\n"
	data := fmt.Appendf(nil, `{"id":"e-00012345-9c2f71d0a4b86e13","time":%q,"direction":"outbound","account":"user000123@example.com","verdict":"spam","score":9.5,"source":"rspamd",`+
		`"sender":{"ip":"203.0.113.9","login":"user000123@example.com"},`+
		`"message":{"message_id":"<7a3e91c0d2f84b65@mx.example.com>","subject":"WIN a FREE cruise today!!!","from":"user000123@example.com","to":["x@example.net"],"raw":%q}}`,
		now.Add(-time.Minute).UTC().Format(time.RFC3339Nano), raw)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseVerdict("aup.verdict.outbound", data, now, 5*time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFingerprint fingerprints a counting event's message, as the
// worker does for each one: the load tool's short message, and one whose
// body is past the 4 KiB the fingerprint reads.
func BenchmarkFingerprint(b *testing.B) {
	now := time.Now()
	for _, size := range []int{64, 16 << 10} {
		body := strings.Repeat("Hello, see https://example.net/5f1c0a9e2b7d4c31 ", size/48+1)[:size]
		raw := "From: user000123@example.com\r\nSubject: WIN a FREE cruise today!!!\r\n\r\n" + body
		data := fmt.Appendf(nil, `{"id":"e-1","time":%q,"direction":"outbound","account":"user000123@example.com","verdict":"spam",`+
			`"message":{"subject":"WIN a FREE cruise today!!!","raw":%q}}`, now.Add(-time.Minute).UTC().Format(time.RFC3339Nano), raw)
		v, err := ParseVerdict("aup.verdict.outbound", data, now, 5*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("body=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v.Fingerprint()
			}
		})
	}
}

// BenchmarkParseVerdictUnknownField decodes an event with an unknown
// field of a few nested levels, which the decoder skips.
func BenchmarkParseVerdictUnknownField(b *testing.B) {
	now := time.Now()
	data := fmt.Appendf(nil, `{"id":"e-00012345-9c2f71d0a4b86e13","time":%q,"direction":"outbound","account":"user000123@example.com","verdict":"spam","score":9.5,"source":"rspamd",`+
		`"x_filter":{"symbols":[{"name":"BAYES_SPAM","score":5.1,"options":["99.9%%"]},{"name":"R_SPF_FAIL","score":1,"options":[]}],"ip":"192.0.2.1","flags":[true,false,null]}}`,
		now.Add(-time.Minute).UTC().Format(time.RFC3339Nano))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseVerdict("aup.verdict.outbound", data, now, 5*time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
