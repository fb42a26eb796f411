package api

// Can reports whether role r may do what role min may. It orders the
// reading roles only; what a token may do is Allowed's to say.
func (r Role) Can(min Role) bool { return r.rank() >= min.rank() && min.rank() > 0 }
