package store

import (
	"regexp"
	"testing"
	"time"
)

// TestIDSource: the ids one Ingest call draws look like NewID's (26
// characters of lower-case base32hex that sort by time) and never repeat,
// within a call or across calls in the same millisecond.
func TestIDSource(t *testing.T) {
	form := regexp.MustCompile(`^[0-9a-v]{26}$`)
	now := time.Now()
	seen := map[string]bool{}
	for range 3 {
		s := newIDSource(now)
		for range 5000 {
			id := string(s.next(nil))
			if !form.MatchString(id) {
				t.Fatalf("id %q is not 26 base32hex characters", id)
			}
			if seen[id] {
				t.Fatalf("id %q drawn twice", id)
			}
			seen[id] = true
		}
	}
	earlier := string(newIDSource(now.Add(-time.Millisecond)).next(nil))
	if later := NewID(now); !(earlier < later) || !(NewID(now.Add(-time.Millisecond)) < string(newIDSource(now).next(nil))) {
		t.Fatalf("ids do not sort by time: %s, %s", earlier, later)
	}
}

func TestWindowWords(t *testing.T) {
	for d, want := range map[time.Duration]string{24 * time.Hour: "24h", 90 * time.Minute: "1h30m", 15 * time.Minute: "15m", time.Hour: "1h", 10*time.Hour + 10*time.Minute: "10h10m"} {
		if got := window(d); got != want {
			t.Errorf("window(%s) = %q, want %q", d, got, want)
		}
	}
}
