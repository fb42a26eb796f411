package notifier

import "testing"

// TestWrap: lines break at spaces within the width, counted in
// characters; a word longer than the width stands alone.
func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		in    string
		width int
		want  string
	}{
		{"", 10, ""},
		{"one two three", 7, "one two\nthree\n"},
		{"one  two\nthree", 13, "one two three\n"},
		{"äöü äöü", 7, "äöü äöü\n"},
		{"a verylongwordindeed b", 5, "a\nverylongwordindeed\nb\n"},
	} {
		if got := wrap(tc.in, tc.width); got != tc.want {
			t.Errorf("wrap(%q, %d) = %q; want %q", tc.in, tc.width, got, tc.want)
		}
	}
}
