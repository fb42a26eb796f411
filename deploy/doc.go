// Package deploy holds the deployment files: the example configuration,
// the compose configuration and the Postfix and Dovecot examples. Its
// test validates them, since no container engine runs in CI.
package deploy
