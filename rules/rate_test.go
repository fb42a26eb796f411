package rules

import "testing"

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
