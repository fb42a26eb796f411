package desk

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

func intp(n int) *int { return &n }

// TestRuleWords: each rule's crossing in words, from its own figures.
func TestRuleWords(t *testing.T) {
	at := time.Date(2026, 11, 22, 15, 2, 30, 0, time.UTC)
	tests := []struct {
		name         string
		sus          events.AUPSuspension
		code, reason string
		why          string
	}{
		{
			name: "volume, recipients", code: "volume:hourly", reason: "sending volume limit exceeded",
			sus: events.AUPSuspension{Rule: "volume:hourly", Threshold: 500, Count: 2001, WindowEnd: at,
				Volume: &events.VolumeCrossing{Limit: "hourly", Kind: rules.VolumeRecipients, WindowSeconds: 3600, Recipients: intp(2001),
					Since: time.Date(2026, 11, 22, 14, 2, 0, 0, time.UTC), Clients: []string{"203.0.113.7"}}},
			why: "Sent to 2,001 recipients in 1 hour (limit 500), from 203.0.113.7, since 14:02 UTC",
		},
		{
			name: "volume, both, since the day before, three clients", code: "volume:daily", reason: "sending volume limit exceeded",
			sus: events.AUPSuspension{Rule: "volume:daily", Threshold: 2000, Count: 2001, WindowEnd: at,
				Volume: &events.VolumeCrossing{Limit: "daily", Kind: rules.VolumeRecipients, WindowSeconds: 86400, Messages: intp(37), Recipients: intp(2001),
					Since: time.Date(2026, 11, 21, 18, 0, 0, 0, time.UTC), Clients: []string{"192.0.2.1", "2001:db8:1:2::/64", "198.51.100.4"}}},
			why: "Sent 37 messages to 2,001 recipients in 24 hours (limit 2,000 recipients), from 192.0.2.1, 2001:db8:1:2::/64 and 198.51.100.4, since 2026-11-21 18:00 UTC",
		},
		{
			name: "volume, messages, no client, no rule named", code: "volume:burst", reason: "sending volume limit exceeded",
			sus: events.AUPSuspension{Threshold: 50, Count: 51, WindowEnd: at,
				Volume: &events.VolumeCrossing{Limit: "burst", Kind: rules.VolumeMessages, WindowSeconds: 600, Messages: intp(51), Since: at.Add(-5 * time.Minute)}},
			why: "Sent 51 messages in 10 minutes (limit 50), since 14:57 UTC",
		},
		{
			name: "volume, a client with a control character", code: "volume:hourly", reason: "sending volume limit exceeded",
			sus: events.AUPSuspension{Rule: "volume:hourly", Threshold: 7, Count: 8, WindowEnd: at,
				Volume: &events.VolumeCrossing{Limit: "hourly", Kind: rules.VolumeRecipients, WindowSeconds: 3600, Recipients: intp(8),
					Since: at, Clients: []string{"192.0.2.1\r\nX-Injected: 1"}}},
			why: "Sent to 8 recipients in 1 hour (limit 7), from 192.0.2.1 X-Injected: 1, since 15:02 UTC",
		},
		{
			name: "rate", code: "spam_rate", reason: "spam rate exceeded",
			sus: events.AUPSuspension{Rule: "spam_rate", Threshold: 200, Count: 45, Rate: &events.RateFacts{Spam: 45, Ham: 455, Limit: 0.05, MinSpam: 20}},
			why: "9% of outbound messages judged spam (45 of 500; limit 5%)",
		},
		{
			name: "rate, a third", code: "spam_rate", reason: "spam rate exceeded",
			sus: events.AUPSuspension{Rule: "spam_rate", Rate: &events.RateFacts{Spam: 1000, Ham: 2000, Limit: 0.25, MinSpam: 20}},
			why: "33.33% of outbound messages judged spam (1,000 of 3,000; limit 25%)",
		},
		{
			name: "rate, just over", code: "spam_rate", reason: "spam rate exceeded",
			sus: events.AUPSuspension{Rule: "spam_rate", Rate: &events.RateFacts{Spam: 126, Ham: 2374, Limit: 0.05, MinSpam: 20}},
			why: "5.04% of outbound messages judged spam (126 of 2,500; limit 5%)",
		},
		{
			name: "rate without figures", code: "spam_rate", reason: "spam rate exceeded",
			sus: events.AUPSuspension{Rule: "spam_rate", Rate: &events.RateFacts{}},
		},
		{
			name: "count", code: "spam_count", reason: "too many spam messages",
			sus: events.AUPSuspension{Rule: "spam_count", Threshold: 20, Count: 21, Rate: &events.RateFacts{Spam: 21, Ham: 1, Limit: 0.05, MinSpam: 20}},
		},
		{name: "before rules were named", code: "spam_count", reason: "too many spam messages", sus: events.AUPSuspension{Threshold: 20, Count: 21}},
		{name: "a rule of a later aupd", code: "spam_future", reason: "the acceptable use policy was broken", sus: events.AUPSuspension{Rule: "spam_future"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ruleOf(&tt.sus)
			if got.Code != tt.code || got.Reason != tt.reason || got.Why != tt.why {
				t.Errorf("got %+v\nwant {Code:%s Reason:%s Why:%s}", got, tt.code, tt.reason, tt.why)
			}
		})
	}
}

// TestReasonOfRule: the AUP suspension and a crossing's history line
// name the rule; other suspensions and entries keep their words.
func TestReasonOfRule(t *testing.T) {
	last := &events.AUPSuspension{ID: "s1", Rule: "volume:hourly"}
	aup := store.Suspension{ID: "s1", Reason: rules.ReasonAUPViolation}
	if got := reasonOfSuspension(aup, last); got != "sending volume limit exceeded" {
		t.Errorf("the AUP suspension: %q", got)
	}
	if got := reasonOfSuspension(store.Suspension{ID: "s0", Reason: rules.ReasonAUPViolation}, last); got != "too many spam messages" {
		t.Errorf("an AUP suspension of another crossing: %q", got)
	}
	if got := reasonOfSuspension(store.Suspension{ID: "s1", Reason: rules.ReasonAdmin}, last); got != "suspended by the provider" {
		t.Errorf("the provider's: %q", got)
	}
	if got := reasonOfSuspension(aup, nil); got != "too many spam messages" {
		t.Errorf("without a crossing: %q", got)
	}
	for rule, want := range map[string]string{"spam_rate": "spam rate exceeded", "volume:daily": "sending volume limit exceeded", "": "too many spam messages"} {
		if got := reasonOfEntry(store.HistoryEntry{Reason: rules.ReasonAUPViolation, Rule: rule}); got != want {
			t.Errorf("history of %q: %q, want %q", rule, got, want)
		}
	}
	if got := reasonOfEntry(store.HistoryEntry{Reason: "user_request", Rule: "spam_rate"}); got != "at the user's request" {
		t.Errorf("a manual entry: %q", got)
	}
}

// TestRuleWordsEscaped: whatever a crossing's record holds, the account
// page shows it as text: a rule name, a client or a reason with markup in
// it never becomes markup.
func TestRuleWordsEscaped(t *testing.T) {
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 22, 15, 2, 0, 0, time.UTC)
	sus := &events.AUPSuspension{ID: "s1", Rule: `volume:<b>x</b>`, Threshold: 7, Count: 8, WindowEnd: at,
		Volume: &events.VolumeCrossing{Limit: "x", Kind: rules.VolumeRecipients, WindowSeconds: 3600, Recipients: intp(8), Since: at,
			Clients: []string{`<script>alert(1)</script>`, `"><img src=x onerror=alert(2)>`}}}
	v := &accountView{Address: "a@example.com", Status: rules.StatusActive,
		Suspensions: []suspensionView{{Service: "send", Suspension: store.Suspension{ID: "s1", Reason: `<i>aup</i>`, At: at}, Words: reasonOfSuspension(store.Suspension{ID: "s1", Reason: rules.ReasonAUPViolation}, sus)}},
		AUP:         &aupView{AUPSuspension: sus, Rule: ruleOf(sus)},
		History:     []store.HistoryEntry{{Time: at, Action: "suspended", Reason: rules.ReasonAUPViolation, Rule: `<u>volume:y</u>`}},
		NoSamples:   "The volume rule <em>x</em> crossed without samples",
	}
	var b bytes.Buffer
	if err := pages["account"].Execute(&b, &accountPage{A: v}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, bad := range []string{"<script", "<img", "<b>", "<i>", "<u>", "<em>"} {
		if strings.Contains(out, bad) {
			t.Errorf("the page has %q as markup", bad)
		}
	}
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=alert(2)&gt;", "<code>volume:&lt;b&gt;x&lt;/b&gt;</code>",
		"(rule <code>&lt;u&gt;volume:y&lt;/u&gt;</code>)", "The volume rule &lt;em&gt;x&lt;/em&gt; crossed without samples"} {
		if !strings.Contains(out, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}
