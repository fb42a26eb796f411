package campaign

import (
	"strings"
	"testing"
	"time"
)

// TestDiffWindow compares windows member by member: equal sets agree
// whatever their order; a missing id is named by its event id; a member
// that is no counting id is named when the account's ham event has it,
// else shown in hex; a count that agrees with the ids published does not
// hide a swapped member.
func TestDiffWindow(t *testing.T) {
	want := map[string]string{member("a1"): "a1", member("a2"): "a2", member("a3"): "a3"}
	known := map[string]string{member("h1"): "h1 (ham)"}
	if d := diffWindow("x@example.com", want, []string{member("a3"), member("a1"), member("a2")}, known); d != nil {
		t.Fatalf("equal windows differ: %+v", d)
	}
	// Same count, one id swapped for the ham one and one for bytes nobody
	// published: two lost, two extra.
	d := diffWindow("x@example.com", want, []string{member("a1"), member("h1"), "bogus!"}, known)
	if d == nil || strings.Join(d.Missing, ",") != "a2,a3" || strings.Join(d.Extra, ",") != "h1 (ham),member 626f67757321" {
		t.Fatalf("diff %+v", d)
	}
	if got := d.lost(); got != "x@example.com: 2 of its 3 counting ids not in the window: a2, a3" {
		t.Errorf("lost: %q", got)
	}
	if got := d.extra(); !strings.HasPrefix(got, "x@example.com: 2 window members that are no counting id of it: h1 (ham)") {
		t.Errorf("extra: %q", got)
	}
	if got := few([]string{"1", "2", "3", "4", "5", "6"}); got != "1, 2, 3, 4, ... (2 more)" {
		t.Errorf("few: %q", got)
	}
}

// TestExpectedMembers checks that the plan's expected windows hold every
// counting original of the account and nothing else, and that its ham
// originals are known by name.
func TestExpectedMembers(t *testing.T) {
	p, err := NewPlan(2000, 20, 3, 0.05, 0.01, 0.4, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want, other := p.expectedMembers()
	for a := range p.Accounts {
		if len(want[a]) != p.Expected[a] {
			t.Fatalf("%s: %d members expected, the plan counts %d", p.Accounts[a], len(want[a]), p.Expected[a])
		}
	}
	for k := range p.NOrig {
		e := p.Original(k)
		a := int(p.orig[k] &^ hamBit)
		_, counted := want[a][member(e.ID)]
		_, ham := other[a][member(e.ID)]
		if counted != p.Counts(k, e.Account) || ham == counted {
			t.Fatalf("original %d (%s, %s): expected %v, known as ham %v", k, e.Account, e.Verdict, counted, ham)
		}
	}
}
