package api

import "github.com/aupd/aupd/internal/auth"

func (p *principal) allowed(perm Permission) bool { return auth.Allowed(p.role, p.company, perm) }

// Route is one endpoint of the HTTP listener and the permission it needs;
// Perm "" is public (or, for the desk's links, opened by a signed link).
type Route struct {
	Pattern string
	Perm    Permission
}

// Routes returns the admin API's routes and what each needs: the table
// the API itself serves from.
func Routes() []Route {
	s := &server{}
	var out []Route
	for _, rt := range s.routeTable() {
		out = append(out, Route{Pattern: rt.pattern, Perm: rt.perm})
	}
	return out
}
