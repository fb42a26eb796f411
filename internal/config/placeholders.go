package config

// checkPlaceholders refuses secrets left at an example's placeholder
// ("change-me", "secret", ...; secret.Secret.Placeholder): a deployment
// must not run with a value that every copy of the example shares.
func (c *Config) checkPlaceholders(bad func(format string, args ...any)) {
	for name, s := range map[string]Secret{
		"nats.password":          c.NATS.Password,
		"nats.token":             c.NATS.Token,
		"redis.password":         c.Redis.Password,
		"notifier.smtp.password": c.Notifier.SMTP.Password,
		"policy.dovecot.api_key": c.Policy.Dovecot.APIKey,
		"desk.link_key":          c.Desk.LinkKey,
	} {
		if s.Placeholder() {
			bad("%s: an example's placeholder (change-me, secret, ...): set a real secret", name)
		}
	}
}
