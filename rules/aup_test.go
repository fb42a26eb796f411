package rules

import "testing"

func TestPolicyCounts(t *testing.T) {
	p := Policy{Threshold: 3, Directions: []Direction{Outbound, Complaint, Inbound}, Verdicts: []Verdict{Spam, Phish, Virus}, Mode: ModeEnforce}
	outOnly := Policy{Threshold: 3, Directions: []Direction{Outbound}, Verdicts: []Verdict{Spam}, Mode: ModeEnforce}
	tests := []struct {
		name  string
		p     Policy
		d     Direction
		v     Verdict
		local bool
		want  bool
	}{
		{"outbound spam counts", p, Outbound, Spam, true, true},
		{"complaint phish counts", p, Complaint, Phish, true, true},
		{"inbound virus local counts", p, Inbound, Virus, true, true},
		{"ham never counts", p, Outbound, Ham, true, false},
		{"not local never counts", p, Inbound, Spam, false, false},
		{"direction not configured", outOnly, Complaint, Spam, true, false},
		{"verdict not configured", outOnly, Outbound, Virus, true, false},
		{"configured pair", outOnly, Outbound, Spam, true, true},
	}
	for _, tt := range tests {
		if got := tt.p.Counts(tt.d, tt.v, tt.local); got != tt.want {
			t.Errorf("%s: Counts(%s,%s,%v) = %v, want %v", tt.name, tt.d, tt.v, tt.local, got, tt.want)
		}
	}
}

func TestOnCrossing(t *testing.T) {
	tests := []struct {
		mode        Mode
		allowlisted bool
		want        Action
	}{
		{ModeEnforce, false, ActionSuspend},
		{ModeEnforce, true, ActionReport},
		{ModeShadow, false, ActionReport},
		{ModeShadow, true, ActionReport},
	}
	for _, tt := range tests {
		p := Policy{Mode: tt.mode, Allowlisted: tt.allowlisted}
		if got := p.OnCrossing(); got != tt.want {
			t.Errorf("mode %s allowlisted %v: got %s, want %s", tt.mode, tt.allowlisted, got, tt.want)
		}
	}
}

func TestExceeds(t *testing.T) {
	for _, tt := range []struct {
		count, threshold int
		want             bool
	}{{0, 0, false}, {1, 0, true}, {10, 10, false}, {11, 10, true}, {9, 10, false}} {
		if got := Exceeds(tt.count, tt.threshold); got != tt.want {
			t.Errorf("Exceeds(%d,%d) = %v", tt.count, tt.threshold, got)
		}
	}
}

func TestKindRoundTrip(t *testing.T) {
	seen := map[Kind]bool{}
	for _, d := range Directions {
		for _, v := range Verdicts {
			k := KindOf(d, v)
			if k >= 16 {
				t.Fatalf("kind %d of (%s,%s) does not fit in 4 bits", k, d, v)
			}
			if seen[k] {
				t.Fatalf("kind %d repeated", k)
			}
			seen[k] = true
			if k.Direction() != d || k.Verdict() != v {
				t.Errorf("KindOf(%s,%s)=%d decodes to (%s,%s)", d, v, k, k.Direction(), k.Verdict())
			}
		}
	}
}
