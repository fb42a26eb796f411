// Package auth is the admin API's authorization model: bearer tokens and
// their hashes. It imports only the standard library, so that aupctl can
// make a token without linking the server.
package auth
