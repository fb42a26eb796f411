// Package auth is the admin API's authorization model: roles, permissions
// and who has which (Allowed), the bearer tokens, their hashes and the
// reloadable token set. It imports only the standard library, so that the
// abuse desk and aupctl need neither the server nor each other.
package auth
