// Package secret holds the one type for passwords, tokens and keys in
// configuration: it never prints, logs or marshals its value.
package secret

import "log/slog"

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
