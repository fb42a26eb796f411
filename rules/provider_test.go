package rules

import "testing"

func TestProviderFor(t *testing.T) {
	p := Provider{Threshold: 10, MaxTracked: 5, Directions: []Direction{Outbound}, Verdicts: []Verdict{Spam}, Mode: ModeShadow, Allowlist: []string{"boss@example.com"}}
	three, fifty := 3, 50
	for _, tc := range []struct {
		name        string
		account     string
		threshold   *int
		allowlisted bool
		want        int // threshold
		wantAllow   bool
		wantCap     int
	}{
		{"provider's", "a@example.com", nil, false, 10, false, 11},
		{"company's threshold", "a@example.com", &three, false, 3, false, 5},
		{"company's higher threshold", "a@example.com", &fifty, false, 50, false, 51},
		{"company's allowlist", "a@example.com", nil, true, 10, true, 11},
		{"provider's allowlist", "boss@example.com", &three, false, 3, true, 5},
	} {
		pol := p.For(tc.account, CompanyRule{Threshold: tc.threshold, Allowlisted: tc.allowlisted})
		if pol.Threshold != tc.want || pol.Allowlisted != tc.wantAllow || pol.Mode != ModeShadow || len(pol.Directions) != 1 || len(pol.Verdicts) != 1 {
			t.Errorf("%s: For = %+v, want threshold %d allowlisted %v", tc.name, pol, tc.want, tc.wantAllow)
		}
		if got := p.Cap(pol); got != tc.wantCap {
			t.Errorf("%s: Cap = %d, want %d", tc.name, got, tc.wantCap)
		}
	}
}

// A company's spam-rate rule replaces the provider's, a zero one turns it
// off, and none leaves the provider's.
func TestProviderForSpamRate(t *testing.T) {
	p := Provider{Threshold: 10, SpamRate: SpamRate{PPM: 50000, MinSpam: 5}}
	if got := p.For("a@example.com", CompanyRule{}).SpamRate; got != p.SpamRate {
		t.Errorf("provider's: %+v", got)
	}
	own := SpamRate{PPM: 3000, MinSpam: 20}
	if got := p.For("a@example.com", CompanyRule{SpamRate: &own}).SpamRate; got != own {
		t.Errorf("company's: %+v", got)
	}
	if got := p.For("a@example.com", CompanyRule{SpamRate: &SpamRate{}}).SpamRate; got.On() {
		t.Errorf("company's off: %+v", got)
	}
}
