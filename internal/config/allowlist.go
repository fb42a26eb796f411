package config

import (
	"fmt"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

func (c *Config) normalizeAllowlist() error {
	for i, a := range c.AUP.Allowlist {
		n, err := events.NormalizeAccount(a)
		if err != nil {
			return fmt.Errorf("aup.allowlist: %q: %w", a, err)
		}
		c.AUP.Allowlist[i] = n
	}
	for i, a := range c.AUP.VolumeAllowlist {
		n, err := events.NormalizeAccount(a)
		if err != nil {
			return fmt.Errorf("aup.volume_allowlist: %q: %w", a, err)
		}
		c.AUP.VolumeAllowlist[i] = n
	}
	return nil
}

// volumeErrors are the problems of a list of volume limits at key, one
// error per problem, each naming its key ("aup.volume[1].window: ...").
func volumeErrors(key string, limits []rules.VolumeLimit) []error {
	var out []error
	for _, e := range flatten(rules.ValidateVolume(limits)) {
		if e != nil {
			out = append(out, fmt.Errorf("%s%w", key, e))
		}
	}
	return out
}
