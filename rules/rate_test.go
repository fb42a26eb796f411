package rules

import (
	"math"
	"testing"
)

func TestSpamRate(t *testing.T) {
	r := SpamRate{PPM: RatePPM(0.05), MinSpam: 10}
	for _, c := range []struct {
		spam, ham int
		want      bool
	}{
		{9, 0, false},        // under the minimum
		{10, 0, true},        // 100%
		{10, 190, false},     // exactly 5%: not above
		{10, 189, true},      // 5.03%
		{50, 9950, false},    // a busy sender's 0.5% false positives
		{40, 60, true},       // a spammer at 40%
		{400, 100000, false}, // flooding ham lowers the rate: the count rule is the backstop
	} {
		if got := r.Crosses(c.spam, c.ham); got != c.want {
			t.Errorf("Crosses(%d, %d) = %v, want %v", c.spam, c.ham, got, c.want)
		}
	}
	if (SpamRate{}).Crosses(100, 0) {
		t.Error("the zero rule crosses")
	}
}

// With HamCap ham or more, no spam count up to the threshold crosses, and
// with one ham less, the threshold's count does: the cap is the least
// that keeps every decision exact.
func TestSpamRateHamCap(t *testing.T) {
	for _, r := range []SpamRate{{PPM: 50000, MinSpam: 1}, {PPM: 3000, MinSpam: 5}, {PPM: 333333, MinSpam: 2}, {PPM: 999999, MinSpam: 1}} {
		for _, threshold := range []int{1, 7, 50, 500} {
			h := r.HamCap(threshold)
			for spam := 1; spam <= threshold; spam++ {
				if r.Crosses(spam, h) {
					t.Fatalf("%+v threshold %d: %d spam with %d ham (the cap) crosses", r, threshold, spam, h)
				}
			}
			if h > 0 && !r.Crosses(threshold, h-1) && threshold >= r.MinSpam {
				t.Fatalf("%+v threshold %d: cap %d is not the least", r, threshold, h)
			}
		}
	}
}

func TestSpamRateSettingValidate(t *testing.T) {
	for _, c := range []struct {
		s  SpamRateSetting
		ok bool
	}{
		{SpamRateSetting{}, true},
		{SpamRateSetting{Rate: 0.05, MinSpam: 20}, true},
		{SpamRateSetting{Rate: 0.000001, MinSpam: 1}, true},
		{SpamRateSetting{Rate: 0.05}, false},          // no minimum
		{SpamRateSetting{Rate: 1, MinSpam: 1}, false}, // 100% is never exceeded
		{SpamRateSetting{Rate: 5, MinSpam: 1}, false}, // 5%, written as a percentage
		{SpamRateSetting{Rate: -0.1, MinSpam: 1}, false},
		{SpamRateSetting{Rate: 0.0000001, MinSpam: 1}, false}, // under one in a million
		{SpamRateSetting{Rate: math.NaN(), MinSpam: 1}, false},
		{SpamRateSetting{Rate: math.Inf(1), MinSpam: 1}, false},
	} {
		if err := c.s.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: %v", c.s, err)
		}
	}
}
