package notifier

import (
	"os"
	"strings"
	"testing"
)

// TestParseEvidence reads the golden evidence.txt back into its parts.
func TestParseEvidence(t *testing.T) {
	b, err := os.ReadFile("testdata/evidence.golden")
	if err != nil {
		t.Fatal(err)
	}
	ev, ok := ParseEvidence(string(b))
	if !ok {
		t.Fatal("the golden evidence.txt did not parse")
	}
	if len(ev.Summary) != 8 || ev.Summary[0] != (Field{"Account", "alice@example.com"}) || ev.Summary[3] != (Field{"Suspended at", "2026-11-21 10:15:00 UTC"}) ||
		ev.Summary[7].Label != "By direction" {
		t.Fatalf("summary %+v", ev.Summary)
	}
	if len(ev.Notes) != 3 || !strings.HasPrefix(ev.Notes[2], "Each message text is quoted") {
		t.Fatalf("notes %q", ev.Notes)
	}
	if len(ev.Samples) != 3 {
		t.Fatalf("%d samples", len(ev.Samples))
	}
	s1, s2, s3 := ev.Samples[0], ev.Samples[1], ev.Samples[2]
	if len(s1.Meta) != 6 || s1.Meta[5] != (Field{"Verdict ID", "01JD3Q5W8Z6N8K3R2V7XH4T9QF"}) || len(s1.Headers) != 5 || s1.Headers[2] != (Field{"Subject", "Cheap meds"}) {
		t.Fatalf("sample 1 %+v", s1)
	}
	if s1.Text != "From: alice@example.com\nTo: bob@example.net\nSubject: Cheap meds\n\nBuy now at http://pharma.example/\n" || s1.Cut != "" || s1.Note != "" {
		t.Fatalf("sample 1 text %q cut %q note %q", s1.Text, s1.Cut, s1.Note)
	}
	if s2.Text != "" || s2.Note != "identical to sample 1, not repeated." {
		t.Fatalf("sample 2 %+v", s2)
	}
	if s3.Cut != "3342" || !strings.HasPrefix(s3.Text, "From: alice@example.com\n") || s3.Meta[4] != (Field{"Score", "(none)"}) {
		t.Fatalf("sample 3 cut %q meta %+v", s3.Cut, s3.Meta)
	}
	// Other texts, and this one cut short, are not read as evidence.
	for _, bad := range []string{"", "hello\n", string(b[:len(b)/2]), strings.Replace(string(b), "Message text:", "Text:", 1)} {
		if _, ok := ParseEvidence(bad); ok {
			t.Errorf("parsed %.60q", bad)
		}
	}
}

// FuzzParseEvidence: any text parses or not, without panicking.
func FuzzParseEvidence(f *testing.F) {
	b, _ := os.ReadFile("testdata/evidence.golden")
	f.Add(string(b))
	f.Add("AUP suspension evidence\n=====\n\nA: b\n\n----- Sample 1 of 1 -----\nT: x\n\nF: y\n\nMessage text:\n| a\n[... cut: 5 more\n----- End of evidence -----\n")
	f.Fuzz(func(t *testing.T, s string) {
		if ev, ok := ParseEvidence(s); ok && ev == nil {
			t.Fatal("ok without evidence")
		}
	})
}
