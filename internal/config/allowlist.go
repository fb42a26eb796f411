package config

import (
	"fmt"

	"github.com/aupd/aupd/internal/events"
)

func (c *Config) normalizeAllowlist() error {
	for i, a := range c.AUP.Allowlist {
		n, err := events.NormalizeAccount(a)
		if err != nil {
			return fmt.Errorf("aup.allowlist: %q: %w", a, err)
		}
		c.AUP.Allowlist[i] = n
	}
	return nil
}
