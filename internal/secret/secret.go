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
var placeholders = []string{"change-me", "changeme", "change_me", "secret", "password", "replace-me", "example", "xxx", "todo"}

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
		if v == p || strings.HasPrefix(v, "change-me") || strings.HasPrefix(v, "changeme") {
			return true
		}
	}
	return false
}
