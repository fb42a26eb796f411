// Package policy groups aupd's enforcement points for the mail servers:
// postfix (the Postfix SMTP access policy delegation server), dovecot (the
// Dovecot auth policy server) and lockout (failed-login counting). Its own
// tests run both against real Postfix and Dovecot (scripts/mailstack).
package policy
