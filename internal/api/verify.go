package api

// Can reports whether role r may do what role min may.
func (r Role) Can(min Role) bool { return r.rank() >= min.rank() && min.rank() > 0 }
