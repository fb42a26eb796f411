package rules

import (
	"fmt"
	"testing"
	"time"
)

func TestVolumeRingFor(t *testing.T) {
	limits := []VolumeLimit{
		{Name: "hourly", Window: time.Hour, Recipients: 500, Action: VolumeThrottle},
		{Name: "daily", Window: 24 * time.Hour, Recipients: 2000, Action: VolumeSuspend},
		{Name: "burst", Window: 10 * time.Minute, Messages: 30, Action: VolumeThrottle},
		{Name: "hourly-hard", Window: time.Hour, Recipients: 900, Action: VolumeSuspend}, // the hourly ring again
		{Name: "two", Window: 2 * time.Hour, Recipients: 800, Action: VolumeThrottle},
	}
	if got := fmt.Sprint(VolumeRings(limits)); got != "[{1h0m0s recipients} {24h0m0s recipients} {10m0s messages} {2h0m0s recipients}]" {
		t.Fatalf("rings %s", got)
	}
	for _, c := range []struct {
		kind string
		w    time.Duration
		want time.Duration // the ring's window; 0: none answers
	}{
		{VolumeRecipients, time.Hour, time.Hour},
		{VolumeRecipients, 30 * time.Minute, time.Hour},      // 6 of the hour's 5-minute buckets
		{VolumeRecipients, 5 * time.Minute, time.Hour},       // one bucket
		{VolumeRecipients, 20 * time.Minute, time.Hour},      // the hour's and the 2h ring's: the finer
		{VolumeRecipients, 7 * time.Minute, 0},               // not whole buckets of any ring
		{VolumeRecipients, time.Hour + time.Second, 0},       // not whole buckets
		{VolumeRecipients, 70 * time.Minute, 2 * time.Hour},  // past the hour: 7 of the 2h ring's buckets
		{VolumeRecipients, 65 * time.Minute, 0},              // past the hour, not whole 10-minute buckets
		{VolumeRecipients, 2 * time.Hour, 2 * time.Hour},     // not the day's 2-hour buckets: the finer
		{VolumeRecipients, 4 * time.Hour, 24 * time.Hour},    // two of the day's buckets
		{VolumeRecipients, 3 * time.Hour, 0},                 // past 2h, not whole 2-hour buckets
		{VolumeRecipients, 24 * time.Hour, 24 * time.Hour},   // the day
		{VolumeRecipients, 26 * time.Hour, 0},                // longer than every ring
		{VolumeMessages, 10 * time.Minute, 10 * time.Minute}, // the burst ring
		{VolumeMessages, 5 * time.Minute, 10 * time.Minute},  // 6 of its 50-second buckets
		{VolumeMessages, 125 * time.Second, 0},               // two and a half of them
		{VolumeMessages, time.Hour, 0},                       // messages are counted over 10m only
		{VolumeMessages, 0, 0},                               // no window
		{VolumeRecipients, -time.Hour, 0},                    // a negative one
		{"bytes", time.Hour, 0},                              // nothing counts that
	} {
		ring, ok := VolumeRingFor(limits, c.kind, c.w)
		if ok != (c.want != 0) || ok && ring.Window != c.want {
			t.Errorf("%s over %s: ring %v, %v; want the %s ring", c.kind, c.w, ring, ok, c.want)
		}
	}
	if _, ok := VolumeRingFor(nil, VolumeRecipients, time.Hour); ok {
		t.Error("no limits answer a window")
	}
}

func TestVolumeSeriesFigures(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	min5 := 5 * time.Minute
	at := func(k int) time.Time { return t0.Add(time.Duration(k) * min5) }
	// 12 buckets of 5 minutes from 09:00: what an hour's ring kept at its
	// last count, in the bucket of 09:55.
	kept := []int{0, 4, 0, 0, 6, 0, 0, 2, 3, 0, 0, 1}
	tests := []struct {
		name    string
		current int
		w       time.Duration
		from    time.Time
		limit   int
		want    VolumeFigures
	}{
		{"the hour, now", 11, time.Hour, t0, 15,
			VolumeFigures{Now: 16, Peak: 16, PeakFrom: at(0), PeakTo: at(12), OverFrom: at(11), OverTo: at(12)}},
		{"the hour at its count: never over", 11, time.Hour, t0, 16,
			VolumeFigures{Now: 16, Peak: 16, PeakFrom: at(0), PeakTo: at(12)}},
		{"20 minutes", 11, 20 * time.Minute, t0, 5,
			// 09:05-09:25 holds 10 (4 + 0 + 0 + 6), the most, and the
			// first over 5: at the end of the 09:20 bucket
			VolumeFigures{Now: 4, Peak: 10, PeakFrom: at(1), PeakTo: at(5), OverFrom: at(4), OverTo: at(5)}},
		{"20 minutes, the period from 09:40", 11, 20 * time.Minute, at(8), 4,
			// only windows whose newest bucket ends after 09:40 count:
			// 09:25-09:45 holds 5
			VolumeFigures{Now: 4, Peak: 5, PeakFrom: at(5), PeakTo: at(9), OverFrom: at(8), OverTo: at(9)}},
		{"a bucket", 11, min5, t0, 100,
			VolumeFigures{Now: 1, Peak: 6, PeakFrom: at(4), PeakTo: at(5)}},
		// Now is 10:10: three empty buckets since the last count.
		{"the hour, three buckets later", 14, time.Hour, t0, 15,
			// 09:15-10:15 holds 12; the window of 09:00-10:00 still shows 16
			VolumeFigures{Now: 12, Peak: 16, PeakFrom: at(0), PeakTo: at(12), OverFrom: at(11), OverTo: at(12)}},
		{"the hour, three buckets later, the period from 10:00", 14, time.Hour, at(12), 15,
			// 09:05-10:05 still holds the 16 (09:00's bucket was empty)
			VolumeFigures{Now: 12, Peak: 16, PeakFrom: at(1), PeakTo: at(13), OverFrom: at(12), OverTo: at(13)}},
		// Now is a day later: nothing counted since, the peak is gone from the period.
		{"a day later", 300, time.Hour, at(280), 0, VolumeFigures{}},
		{"a day later, the period reaching back", 300, time.Hour, t0, 0,
			VolumeFigures{Peak: 16, PeakFrom: at(0), PeakTo: at(12), OverFrom: at(11), OverTo: at(12)}},
	}
	for _, c := range tests {
		s := VolumeSeries{From: t0, Width: min5, Buckets: kept, Current: c.current}
		got := s.Figures(c.w, c.from, c.limit)
		if got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
		if got.Over() != !c.want.OverTo.IsZero() || got.OverNow(c.limit) != (c.want.Now > c.limit) {
			t.Errorf("%s: Over %v, OverNow %v", c.name, got.Over(), got.OverNow(c.limit))
		}
	}
	if f := (VolumeSeries{From: t0, Width: min5, Buckets: kept, Current: 11}).Figures(time.Minute, t0, 0); f != (VolumeFigures{}) {
		t.Errorf("a window under a bucket: %+v", f)
	}
}
