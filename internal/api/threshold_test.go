package api

import "testing"

// A company threshold of 0 would suspend at the first counted message: the
// API refuses it, as the config does.
func TestCompanyThresholdZeroIsRefused(t *testing.T) {
	e := newEnv(t)
	for _, th := range []any{0, -3} {
		e.must(400, "PUT", "/api/v1/companies/zero", tokAdmin, map[string]any{"domains": []string{"zero.example"}, "threshold": th, "reason": "x"})
	}
	e.must(201, "PUT", "/api/v1/companies/zero", tokAdmin, map[string]any{"domains": []string{"zero.example"}, "threshold": 1, "reason": "x"})
}
