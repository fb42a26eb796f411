package rules

import (
	"fmt"
	"math"
)

// SpamRate is the spam-rate rule: an account crosses when, over the
// window, the share of its outbound messages judged spam exceeds Rate
// and at least MinSpam of them were. The count rule (the threshold)
// stays as a backstop. The zero SpamRate is off.
//
// The share is of outbound messages: outbound events that count (the
// policy's verdicts) against outbound ham. Each message counts once, by
// its event id, as the spam count does.
type SpamRate struct {
	// PPM is the rate in parts per million (5% = 50,000): integers, so
	// that the ingest script, the replay and this package decide alike.
	PPM     int
	MinSpam int
}

// On reports whether the rule is set.
func (r SpamRate) On() bool { return r.PPM > 0 }

// RatePPM is rate (a fraction, 0.05 for 5%) in parts per million.
func RatePPM(rate float64) int { return int(math.Round(rate * 1e6)) }

// Crosses is the rule itself: at least MinSpam spam and spam / (spam +
// ham) strictly above the rate.
func (r SpamRate) Crosses(spam, ham int) bool {
	return r.On() && spam >= r.MinSpam && int64(spam)*1e6 > int64(r.PPM)*int64(spam+ham)
}

// HamCap is how much ham an account must keep for every decision to be
// exact while its spam count is at most threshold (above it, the count
// rule crosses anyway): with that much ham or more, spam / (spam + ham)
// is at most the rate, so any more changes nothing. 0 when the rule is
// off.
func (r SpamRate) HamCap(threshold int) int {
	if !r.On() || r.PPM >= 1e6 {
		return 0
	}
	// the least h with threshold * 1e6 <= ppm * (threshold + h)
	num := int64(threshold) * int64(1e6-r.PPM)
	return int((num + int64(r.PPM) - 1) / int64(r.PPM))
}

// SpamRateSetting is the spam-rate rule as configured: the rate as a
// fraction (0.05 for 5%; 0: off) and the minimum spam count.
type SpamRateSetting struct {
	Rate    float64 `yaml:"rate" json:"rate"`
	MinSpam int     `yaml:"min_spam" json:"min_spam"`
}

// Rule is the setting as a rule.
func (s SpamRateSetting) Rule() SpamRate { return SpamRate{PPM: RatePPM(s.Rate), MinSpam: s.MinSpam} }

// Validate checks a setting: a rate from 0 (off) to under 1, with a
// minimum of at least 1 when on.
func (s SpamRateSetting) Validate() error {
	switch {
	case s.Rate < 0 || s.Rate >= 1 || (s.Rate > 0 && RatePPM(s.Rate) == 0):
		return fmt.Errorf("rate %v: must be 0 (off) or a fraction from 0.000001 to under 1 (0.05 is 5%%)", s.Rate)
	case s.Rate > 0 && s.MinSpam < 1:
		return fmt.Errorf("min_spam %d: must be at least 1", s.MinSpam)
	}
	return nil
}
