package rules

import (
	"slices"
	"time"
)

// VolumeRing is one ring of an account's volume record: the buckets of
// one pair of window and what is counted, shared by the limits that have
// them.
type VolumeRing struct {
	Window time.Duration
	Kind   string // VolumeMessages or VolumeRecipients
}

// Bucket is the width of the ring's buckets.
func (r VolumeRing) Bucket() time.Duration { return r.Window / VolumeBuckets }

// Answers reports whether the ring's buckets answer a window w: w is a
// whole number of buckets, and at most the ring's window (of its 12
// buckets, a count over w takes the newest w/Bucket).
func (r VolumeRing) Answers(kind string, w time.Duration) bool {
	g := r.Bucket()
	return kind == r.Kind && g > 0 && w > 0 && w <= r.Window && w%g == 0
}

// VolumeRings returns the rings of a list of limits, in the order the
// volume record keeps them (the order each pair first appears in).
func VolumeRings(limits []VolumeLimit) []VolumeRing {
	var out []VolumeRing
	for _, l := range limits {
		if r := (VolumeRing{l.Window, l.Kind()}); !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// VolumeRingFor returns the ring of limits that answers a window w of
// kind, the one with the finest buckets: the count it gives covers the
// last w at most and the last w minus one of its buckets at least.
// ok is false when no ring answers it.
func VolumeRingFor(limits []VolumeLimit, kind string, w time.Duration) (ring VolumeRing, ok bool) {
	for _, r := range VolumeRings(limits) {
		if r.Answers(kind, w) && (!ok || r.Bucket() < ring.Bucket()) {
			ring, ok = r, true
		}
	}
	return ring, ok
}

// VolumeSeries is what an account's volume record shows of one ring:
// consecutive buckets of Width, the first starting at From. Current is
// the index of the bucket that holds now; buckets between the last one
// kept and Current are empty (nothing was counted since).
type VolumeSeries struct {
	From    time.Time
	Width   time.Duration
	Buckets []int
	Current int
}

// at is the count of bucket k: 0 past the buckets kept.
func (s VolumeSeries) at(k int) int {
	if k < 0 || k >= len(s.Buckets) {
		return 0
	}
	return s.Buckets[k]
}

// start is when bucket k starts.
func (s VolumeSeries) start(k int) time.Time { return s.From.Add(time.Duration(k) * s.Width) }

// VolumeFigures are what a volume record shows of a window tried at a
// max, by whole buckets (VolumeSeries.Figures).
type VolumeFigures struct {
	// Now is the count over the window now: the bucket that holds now
	// and the ones before it that make up the window.
	Now int
	// Peak is the highest count over the window the record shows, at
	// the end of a bucket of the period; PeakFrom and PeakTo bound that
	// window's buckets (zero when Peak is 0).
	Peak             int
	PeakFrom, PeakTo time.Time
	// OverFrom and OverTo bound the first bucket at whose end the count
	// was over the max, within the period: a limit of that max would
	// have crossed within it. Zero: never over.
	OverFrom, OverTo time.Time
}

// Over reports whether the count went over the max within the period.
func (f VolumeFigures) Over() bool { return !f.OverTo.IsZero() }

// OverNow reports whether the count is over limit now: a throttle at
// that max would hold the account back now.
func (f VolumeFigures) OverNow(limit int) bool { return f.Now > limit }

// Figures sums the series over a window w, a whole number of its
// buckets (VolumeRing.Answers), as a limit of w counts: whole buckets,
// the newest the one a message falls in. A window counts toward Peak
// and toward the first crossing of limit (more than limit crosses it)
// when its newest bucket ends after from, within the period, and the
// record holds all its buckets.
// Buckets hold what the live limits let through: a message that a
// throttle or a suspension refused was never counted.
func (s VolumeSeries) Figures(w time.Duration, from time.Time, limit int) VolumeFigures {
	var f VolumeFigures
	if s.Width <= 0 || w < s.Width {
		return f
	}
	m := int(w / s.Width)
	sum := func(j int) int { // the window whose newest bucket is j
		t := 0
		for k := j - m + 1; k <= j; k++ {
			t += s.at(k)
		}
		return t
	}
	f.Now = sum(s.Current)
	// Past the last bucket kept, the sums only fall: stop at the first
	// window made only of empty buckets.
	last := min(s.Current, len(s.Buckets)-1+m-1)
	for j := m - 1; j <= last; j++ {
		if !s.start(j + 1).After(from) {
			continue
		}
		n := sum(j)
		if n > f.Peak {
			f.Peak, f.PeakFrom, f.PeakTo = n, s.start(j-m+1), s.start(j+1)
		}
		if n > limit && f.OverTo.IsZero() {
			f.OverFrom, f.OverTo = s.start(j), s.start(j+1)
		}
	}
	return f
}
