package notifier

import (
	"strconv"

	"github.com/aupd/aupd/internal/events"
)

// RateData is what a notice says about a spam-rate crossing.
type RateData struct {
	Spam  int    // outbound messages judged spam in the window
	Sent  int    // outbound messages judged at all: spam and ham
	Share string // Spam of Sent, in words: "9%"
	Limit string // the rule's rate: "5%"
	// MinSpam is the least spam the rule waits for.
	MinSpam int
}

func rateData(r *events.RateFacts) *RateData {
	sent := r.Spam + r.Ham
	d := &RateData{Spam: r.Spam, Sent: sent, Limit: percent(r.Limit), MinSpam: r.MinSpam}
	if sent > 0 {
		d.Share = percent(float64(r.Spam) / float64(sent))
		if d.Share == d.Limit && float64(r.Spam) > r.Limit*float64(sent) {
			d.Share = "just over " + d.Limit // 5.001% against 5%
		}
	}
	return d
}

// percent is a fraction in words: 0.05 "5%", 0.0125 "1.25%", 0.4 "40%",
// at most two decimals.
func percent(f float64) string {
	return strconv.FormatFloat(float64(int64(f*10000+0.5))/100, 'f', -1, 64) + "%"
}
