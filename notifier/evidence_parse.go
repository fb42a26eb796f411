package notifier

import (
	"strings"
)

// Field is one "Label: value" line of evidence.txt.
type Field struct {
	Label, Value string
}

// Evidence is evidence.txt read back into its parts, for pages that show
// it as messages rather than as text (the abuse desk). It holds the text
// as evidence.txt has it: one-line fields cleaned, message text with
// control characters shown as \xNN.
type Evidence struct {
	Summary []Field  // Account, Company, Suspension, ... By direction
	Notes   []string // the lines between the summary and the samples
	Samples []EvidenceSample
}

// EvidenceSample is one sample message of evidence.txt.
type EvidenceSample struct {
	Meta    []Field // Time, Verdict, Direction, Source, Score, Verdict ID
	Headers []Field // From, To, Subject, Date, Message-ID, as the summary of the sample gives them
	// Text is the message text (header and body), unquoted; "" when it
	// is not recorded or repeats another sample's (Note says which).
	Text string
	// Cut is the number of bytes of the message not shown, as the
	// evidence's cut line says; "" when nothing was cut.
	Cut  string
	Note string // "not recorded.", "identical to sample 1, not repeated."
}

// ParseEvidence reads evidence.txt as the notifier writes it (see
// "evidence.txt layout"). ok is false for a text of another layout,
// which is then best shown as it is.
func ParseEvidence(text string) (ev *Evidence, ok bool) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 || lines[0] != "AUP suspension evidence" || !strings.HasPrefix(lines[1], "====") {
		return nil, false
	}
	ev = &Evidence{}
	i := 2
	for i < len(lines) && lines[i] == "" {
		i++
	}
	// The summary: fields up to the first empty line.
	for ; i < len(lines) && lines[i] != ""; i++ {
		f, ok := field(lines[i])
		if !ok {
			return nil, false
		}
		ev.Summary = append(ev.Summary, f)
	}
	// Notes up to the first sample or the end.
	for ; i < len(lines) && !strings.HasPrefix(lines[i], "----- "); i++ {
		if lines[i] != "" {
			ev.Notes = append(ev.Notes, lines[i])
		}
	}
	for i < len(lines) {
		l := lines[i]
		if l == "----- End of evidence -----" {
			return ev, true
		}
		if !strings.HasPrefix(l, "----- Sample ") {
			return nil, false
		}
		i++
		var s EvidenceSample
		// Meta, an empty line, the headers, an empty line.
		for part := 0; part < 2; part++ {
			for ; i < len(lines) && lines[i] != ""; i++ {
				f, ok := field(lines[i])
				if !ok {
					return nil, false
				}
				if part == 0 {
					s.Meta = append(s.Meta, f)
				} else {
					s.Headers = append(s.Headers, f)
				}
			}
			i++
		}
		if i >= len(lines) {
			return nil, false
		}
		switch text, ok := strings.CutPrefix(lines[i], "Message text:"); {
		case !ok:
			return nil, false
		case text != "":
			s.Note = strings.TrimSpace(text)
			i++
		default:
			i++
			var b strings.Builder
			for ; i < len(lines) && strings.HasPrefix(lines[i], evidenceQuote); i++ {
				b.WriteString(lines[i][len(evidenceQuote):])
				b.WriteByte('\n')
			}
			s.Text = b.String()
			if i < len(lines) && strings.HasPrefix(lines[i], "[... cut: ") {
				s.Cut, _, _ = strings.Cut(strings.TrimPrefix(lines[i], "[... cut: "), " ")
				i++
			}
		}
		ev.Samples = append(ev.Samples, s)
		for i < len(lines) && lines[i] == "" {
			i++
		}
	}
	return nil, false // no end marker: cut short
}

// field reads a "Label:   value" line of evidence.txt.
func field(l string) (Field, bool) {
	label, value, ok := strings.Cut(l, ":")
	if !ok || label == "" || strings.ContainsAny(label, " \t") && !knownLabel(label) {
		return Field{}, false
	}
	return Field{Label: label, Value: strings.TrimLeft(value, " ")}, true
}

// knownLabel: the labels of evidence.txt with a space in them.
func knownLabel(l string) bool {
	switch l {
	case "Suspended at", "By direction", "Verdict ID":
		return true
	}
	return false
}
