package auth

// Permission is one kind of thing a token may do. Allowed is the one place
// that decides which token has which: the admin API's routes, the session
// locks, the control endpoints and the abuse desk all ask it.
type Permission string

// The permissions.
const (
	// PermRead reads accounts, history, evidence, licences and companies
	// and asks for decisions (the API's GET routes, POST /decide, every
	// desk page).
	PermRead Permission = "read"
	// PermAct suspends, reinstates, locks, unlocks, ends lockouts and
	// replays a threshold (the API and the desk's actions).
	PermAct Permission = "act"
	// PermManage sets maintenance, closes, activates, deletes and sets up
	// accounts (a company-scoped admin: its company's accounts).
	PermManage Permission = "manage"
	// PermCompanies changes and deletes companies: thresholds and domains
	// are the provider's to set, so an admin token without a company scope.
	PermCompanies Permission = "companies"
	// PermPublish publishes verdicts (the /api/v1/ingest/ routes).
	PermPublish Permission = "publish"
	// PermSessionLock takes, renews, lists and releases mailbox session
	// locks: a mail front end's service token, without a company scope.
	PermSessionLock Permission = "session-lock"
	// PermControl reloads aupd (POST /-/reload): an admin token without a
	// company scope.
	PermControl Permission = "control"
)

// Permissions lists every permission, in the order of the docs' table.
func Permissions() []Permission {
	return []Permission{PermRead, PermAct, PermManage, PermCompanies, PermPublish, PermSessionLock, PermControl}
}

// Allowed reports whether a token of role, limited to company ("" for
// none), may do what p needs. It is the only place that decides this.
//
// A viewer reads, and holds session locks: the webmail's and Dovecot's
// service tokens have been viewers since session locks exist, so a
// viewer keeps that right (docs/api.md). A publisher only publishes.
func Allowed(role Role, company string, p Permission) bool {
	switch p {
	case PermRead:
		return role.rank() >= RoleViewer.rank()
	case PermAct:
		return role.rank() >= RoleAbuse.rank()
	case PermManage:
		return role.rank() >= RoleAdmin.rank()
	case PermPublish:
		return role == RolePublisher
	case PermSessionLock:
		return role.rank() >= RoleViewer.rank() && company == ""
	case PermCompanies, PermControl:
		return role == RoleAdmin && company == ""
	}
	return false
}

// Allowed reports whether the token t may do what p needs.
func (t TokenConfig) Allowed(p Permission) bool { return Allowed(t.Role, t.Company, p) }

// Needs says what a permission needs, for a 403's message.
func (p Permission) Needs() string {
	switch p {
	case PermRead:
		return "role viewer, abuse or admin"
	case PermAct:
		return "role abuse or admin"
	case PermManage:
		return "role admin"
	case PermPublish:
		return "role publisher"
	case PermSessionLock:
		return "role viewer, abuse or admin without a company scope"
	case PermCompanies, PermControl:
		return "role admin without a company scope"
	}
	return "a permission no token has"
}
