package notifier

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"mime"
	"net/mail"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/aupd/aupd/internal/events"
)

// MaxSamples is the most sample messages a notice carries.
const MaxSamples = 3

// evidence.txt layout
//
// evidence.txt is UTF-8 text with LF line ends: a summary of the
// suspension, then one section per sample in time order. Every one-line
// field taken from an event is cleaned (no control or bidi characters, at
// most 500 characters). The message text of a sample is cut after
// Config.EvidenceMaxBytes bytes (on a character boundary), and a cut is
// marked by the line
//
//	[... cut: N more bytes of this message are not shown ...]
//
// Each line of a message text is prefixed with "| ", so nothing in a
// message can pass itself off as part of the report; control characters
// in it other than tab are shown as \xNN and invalid UTF-8 as U+FFFD.
const evidenceQuote = "| "

// pickSamples chooses up to MaxSamples samples, preferring different
// messages over copies of one message, and orders them by time.
func pickSamples(in []*events.Verdict) []*events.Verdict {
	var picked, dups []*events.Verdict
	seen := map[[32]byte]bool{}
	for _, v := range in {
		if v == nil {
			continue
		}
		fp := fingerprint(v)
		if seen[fp] {
			dups = append(dups, v)
			continue
		}
		seen[fp] = true
		picked = append(picked, v)
	}
	picked = append(picked, dups...)
	if len(picked) > MaxSamples {
		picked = picked[:MaxSamples]
	}
	sort.SliceStable(picked, func(i, j int) bool { return picked[i].Time.Before(picked[j].Time) })
	return picked
}

// fingerprint identifies a message's content: the raw text when there is
// one, otherwise its subject and sender.
func fingerprint(v *events.Verdict) [32]byte {
	if v.Message == nil {
		return sha256.Sum256([]byte("\x00id\x00" + v.ID))
	}
	if v.Message.Raw != "" {
		return sha256.Sum256([]byte("\x00raw\x00" + v.Message.Raw))
	}
	return sha256.Sum256([]byte("\x00hdr\x00" + v.Message.From + "\x00" + v.Message.Subject))
}

// evidence renders evidence.txt.
func (r *renderer) evidence(n notice, d NoticeData) []byte {
	var b bytes.Buffer
	line := func(label, value string) {
		fmt.Fprintf(&b, "%-13s %s\n", label+":", value)
	}
	b.WriteString("AUP suspension evidence\n=======================\n\n")
	line("Account", d.Account)
	switch {
	case d.Company == "":
		line("Company", "(none)")
	case d.Company != d.CompanyName:
		line("Company", d.CompanyName+" ("+d.Company+")")
	default:
		line("Company", d.CompanyName)
	}
	line("Suspension", d.SuspensionID)
	line("Suspended at", d.SuspendedAt.Format("2006-01-02 15:04:05 UTC"))
	line("Suspended", strings.Join(d.Services, ", "))
	if r := d.Rate; r != nil {
		line("Rule", d.Rule)
		line("Window", d.WindowStart.Format("2006-01-02 15:04:05 UTC")+" to "+d.WindowEnd.Format("2006-01-02 15:04:05 UTC"))
		line("Spam rate", fmt.Sprintf("%d of %d outbound messages identified as spam (%s)", r.Spam, r.Sent, r.Share))
		line("Limit", fmt.Sprintf("%s, with at least %d identified as spam", r.Limit, r.MinSpam))
	} else if v := d.Volume; v != nil {
		line("Rule", d.Rule)
		line("Sent", v.Sent+", from "+v.Since.Format("2006-01-02 15:04:05 UTC")+" to "+d.WindowEnd.Format("2006-01-02 15:04:05 UTC"))
		line("Limit", v.Limit)
		line("Clients", orNone(strings.Join(v.Clients, ", ")))
	} else {
		line("Window", d.WindowStart.Format("2006-01-02 15:04:05 UTC")+" to "+d.WindowEnd.Format("2006-01-02 15:04:05 UTC"))
		count := strconv.Itoa(d.Count)
		if d.Capped {
			count = "at least " + count
		}
		line("Counted", fmt.Sprintf("%s messages identified as spam, threshold %d", count, d.Threshold))
		line("By direction", fmt.Sprintf("outbound %d, inbound %d, complaints %d", d.Outbound, d.Inbound, d.Complaints))
	}
	b.WriteString("\n")

	missing := max(d.SamplesReferenced-n.fetched, 0)
	switch {
	case d.Volume != nil && d.SamplesReferenced == 0 && d.SamplesAttached == 0:
		b.WriteString(wrap(VolumeWithoutSamples(d.Rule), 72))
	case d.SamplesReferenced == 0 && d.SamplesAttached == 0:
		b.WriteString("No sample messages were recorded for this suspension.\n")
	case missing > 0:
		fmt.Fprintf(&b, "%d of the %d sample messages recorded for this suspension are no longer\n"+
			"available (expired from the verdict store); %d shown below.\n",
			missing, d.SamplesReferenced, d.SamplesAttached)
	case d.Volume != nil:
		fmt.Fprintf(&b, "%d sample message(s) from this mailbox that the spam filter flagged are shown\nbelow; the volume rule itself counts no message content.\n", d.SamplesAttached)
	default:
		fmt.Fprintf(&b, "%d sample message(s) that counted toward this suspension are shown below.\n", d.SamplesAttached)
	}
	if d.SamplesAttached > 0 {
		fmt.Fprintf(&b, "Each message text is quoted with %q and cut after %d bytes; a cut is marked.\n",
			evidenceQuote, r.cfg.EvidenceMaxBytes)
	}

	firstSeen := map[[32]byte]int{}
	for i, v := range n.samples {
		fmt.Fprintf(&b, "\n----- Sample %d of %d -----\n", i+1, len(n.samples))
		line("Time", v.Time.UTC().Format("2006-01-02 15:04:05 UTC"))
		line("Verdict", cleanLine(string(v.Verdict), 40))
		line("Direction", cleanLine(string(v.Direction), 40))
		line("Source", orNone(cleanLine(v.Source, maxLine)))
		if v.Score != nil {
			line("Score", strconv.FormatFloat(*v.Score, 'f', -1, 64))
		} else {
			line("Score", "(none)")
		}
		line("Verdict ID", cleanLine(v.ID, maxLine))
		m := sampleHeaders(v)
		b.WriteString("\n")
		line("From", orNone(m.From))
		line("To", orNone(m.To))
		line("Subject", orNone(m.Subject))
		line("Date", orNone(m.Date))
		line("Message-ID", orNone(m.MessageID))
		b.WriteString("\n")
		fp := fingerprint(v)
		if j, ok := firstSeen[fp]; ok && v.Message != nil && v.Message.Raw != "" {
			fmt.Fprintf(&b, "Message text: identical to sample %d, not repeated.\n", j)
			continue
		}
		firstSeen[fp] = i + 1
		if v.Message == nil || v.Message.Raw == "" {
			b.WriteString("Message text: not recorded.\n")
			continue
		}
		b.WriteString("Message text:\n")
		quoteRaw(&b, v.Message.Raw, r.cfg.EvidenceMaxBytes)
	}
	b.WriteString("\n----- End of evidence -----\n")
	return b.Bytes()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

type sampleHdr struct{ From, To, Subject, Date, MessageID string }

// sampleHeaders takes the headers from the event's message fields, and
// from the raw message where a field is missing.
func sampleHeaders(v *events.Verdict) sampleHdr {
	var h sampleHdr
	if v.Message == nil {
		return h
	}
	m := v.Message
	h.From, h.Subject, h.Date, h.MessageID = m.From, m.Subject, m.Date, m.MessageID
	h.To = strings.Join(m.To, ", ")
	if m.Raw != "" && (h.From == "" || h.To == "" || h.Subject == "" || h.Date == "" || h.MessageID == "") {
		raw := m.Raw
		if len(raw) > 64<<10 {
			raw = raw[:64<<10]
		}
		if pm, err := mail.ReadMessage(strings.NewReader(raw)); err == nil {
			var wd mime.WordDecoder
			dec := func(s string) string {
				if d, err := wd.DecodeHeader(s); err == nil {
					return d
				}
				return s
			}
			fill := func(dst *string, name string) {
				if *dst == "" {
					*dst = dec(pm.Header.Get(name))
				}
			}
			fill(&h.From, "From")
			fill(&h.To, "To")
			fill(&h.Subject, "Subject")
			fill(&h.Date, "Date")
			fill(&h.MessageID, "Message-Id")
		}
	}
	h.From = cleanLine(h.From, maxLine)
	h.To = cleanLine(h.To, maxLine)
	h.Subject = cleanLine(h.Subject, maxLine)
	h.Date = cleanLine(h.Date, maxLine)
	h.MessageID = cleanLine(h.MessageID, maxLine)
	return h
}

// quoteRaw writes raw, cut after max bytes, one "| "-prefixed line per
// line, with control characters made visible.
func quoteRaw(b *bytes.Buffer, raw string, max int) {
	cut := 0
	if len(raw) > max {
		end := max
		for end > 0 && !utf8.RuneStart(raw[end]) {
			end--
		}
		cut = len(raw) - end
		raw = raw[:end]
	}
	raw = strings.ToValidUTF8(raw, "\uFFFD")
	raw = strings.ReplaceAll(raw, "\r\n", "\n")
	raw = strings.TrimSuffix(raw, "\n")
	for l := range strings.SplitSeq(raw, "\n") {
		b.WriteString(evidenceQuote)
		for _, r := range l {
			switch {
			case r == '\t':
				b.WriteRune(r)
			case r < 0x20 || r == 0x7f:
				fmt.Fprintf(b, `\x%02x`, r)
			case unsafeRune(r):
				fmt.Fprintf(b, `\u%04x`, r)
			default:
				b.WriteRune(r)
			}
		}
		b.WriteByte('\n')
	}
	if cut > 0 {
		fmt.Fprintf(b, "[... cut: %d more bytes of this message are not shown ...]\n", cut)
	}
}
