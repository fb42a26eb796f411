package config

import (
	"strings"

	"github.com/aupd/aupd/internal/auth"
)

// exampleTokens are the API tokens whose hashes the repository's examples
// ship (deploy/aupd.example.yml, deploy/compose): everyone who has read
// them holds these tokens.
var exampleTokens = []string{
	"example-admin-token-change-me", "example-acme-abuse-token-change-me",
	"change-me", "changeme", "secret", "password", "token", "example",
}

// checkPlaceholders refuses secrets left at an example's placeholder
// ("change-me", "secret", ...; secret.Secret.Placeholder), and API tokens
// whose hash is that of an example's token: a deployment must not run
// with a value that every copy of the example shares.
func (c *Config) checkPlaceholders(bad func(format string, args ...any)) {
	// In the config file's order, so that the joined error reads the same
	// every run.
	for _, f := range []struct {
		name string
		s    Secret
	}{
		{"nats.password", c.NATS.Password},
		{"nats.token", c.NATS.Token},
		{"redis.password", c.Redis.Password},
		{"notifier.smtp.password", c.Notifier.SMTP.Password},
		{"policy.dovecot.api_key", c.Policy.Dovecot.APIKey},
		{"policy.dovecot.previous_api_key", c.Policy.Dovecot.PreviousAPIKey},
		{"desk.link_key", c.Desk.LinkKey},
	} {
		if f.s.Placeholder() {
			bad("%s: an example's placeholder (change-me, secret, ...): set a real secret", f.name)
		}
	}
	for i, t := range c.Auth.Tokens {
		for _, ex := range exampleTokens {
			if strings.EqualFold(strings.TrimSpace(t.Hash), auth.HashToken(ex)) {
				bad("auth.tokens[%d] (%s): the hash of an example's token (%q): make a token with aupctl hash-token", i, t.Name, ex)
			}
		}
	}
}
