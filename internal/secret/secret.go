// Package secret holds the one type for passwords, tokens and keys in
// configuration: it never prints, logs or marshals its value.
package secret

import (
	"log/slog"
	"strings"
	"unicode"
)

// Secret is a string that never shows itself: it prints, logs and marshals
// (YAML, JSON) as "<secret>". Use string(s) where the value is needed.
type Secret string

const redacted = "<secret>"

// String returns "<secret>", or "" when the secret is empty.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString returns "<secret>" so that %#v does not show it either.
func (s Secret) GoString() string { return s.String() }

// LogValue keeps the secret out of slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalYAML writes "<secret>" instead of the value.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalJSON writes "<secret>" instead of the value.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// placeholders are values that examples ship in place of a secret.
var placeholders = []string{"secret", "password", "example", "xxx", "todo"}

// markers make any value a placeholder, wherever they stand in it.
var markers = []string{"change-me", "changeme", "change_me", "replace-me", "replaceme", "replace_me"}

// Placeholder reports whether s is a value that examples ship in place of
// a secret ("change-me", "CHANGE-ME-...", "secret", "password", ...) or
// one with no letters or digits at all: one that must not be used.
// Empty is not a placeholder (it means "none").
func (s Secret) Placeholder() bool {
	v := strings.ToLower(strings.TrimSpace(string(s)))
	if s == "" {
		return false
	}
	if strings.IndexFunc(v, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }) < 0 {
		return true
	}
	for _, p := range placeholders {
		if v == p {
			return true
		}
	}
	// "example-dovecot-key-change-me", "CHANGE-ME-redis": an example's
	// value wherever the marker stands.
	for _, m := range markers {
		if word(v, m) {
			return true
		}
	}
	return false
}

// word reports whether m stands in v as a word of its own: not preceded
// or followed by a letter or digit ("exchange-meter" holds no "change-me").
func word(v, m string) bool {
	alnum := func(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' }
	for i := 0; ; {
		j := strings.Index(v[i:], m)
		if j < 0 {
			return false
		}
		at, end := i+j, i+j+len(m)
		if (at == 0 || !alnum(v[at-1])) && (end == len(v) || !alnum(v[end])) {
			return true
		}
		i = at + 1
	}
}
