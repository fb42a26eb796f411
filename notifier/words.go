package notifier

import (
	"strings"
	"unicode/utf8"

	"github.com/aupd/aupd/internal/events"
)

// The words the notice and evidence.txt use for a suspension, for the
// other pages that describe one (the abuse desk), so that both say it
// alike.

// Quantity is n of a volume limit's kind (rules.VolumeMessages or
// rules.VolumeRecipients) in words: "1 recipient", "2,001 recipients",
// "1 message".
func Quantity(n int, kind string) string { return quantity(n, kind) }

// Thousands writes n with a comma every three digits: "2,001".
func Thousands(n int) string { return thousands(n) }

// Span is a window in words: "24 hours", "1 hour", "90 minutes", "7 days".
func Span(seconds int64) string { return span(seconds) }

// VolumeWords is what the notice says of a volume limit's crossing; max
// is the limit's (the suspension's threshold). Every string in it is
// cleaned as the notice's are.
func VolumeWords(v *events.VolumeCrossing, max int) VolumeData { return *volumeData(v, max) }

// RateWords is what the notice says of a spam-rate crossing: the share
// ("9%") of the outbound messages judged (Sent) that were spam, and the
// limit ("5%"). Share is "" when no message was judged.
func RateWords(r *events.RateFacts) RateData { return *rateData(r) }

// VolumeWithoutSamples is evidence.txt's note on a volume crossing without
// samples, on one line; rule is the crossing's rule (volume:<name>),
// cleaned by the caller.
func VolumeWithoutSamples(rule string) string {
	return "The volume rule " + rule + " crossed without samples: it counts what the " +
		"mailbox sends at the mail server, which sees no message content, and the " +
		"spam filter had flagged none of its recent messages."
}

// wrap breaks text into lines of at most width characters at spaces (a
// longer word stays whole on a line of its own), each ended by "\n".
func wrap(text string, width int) string {
	var b strings.Builder
	n := 0
	for _, w := range strings.Fields(text) {
		wn := utf8.RuneCountInString(w)
		switch {
		case n == 0:
		case n+1+wn > width:
			b.WriteByte('\n')
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += wn
	}
	if n > 0 {
		b.WriteByte('\n')
	}
	return b.String()
}
