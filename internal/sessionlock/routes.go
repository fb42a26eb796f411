package sessionlock

// Routes returns every route of the session lock API: what the HTTP
// server mounts and what the OpenAPI document must describe.
func Routes() []string { return []string{RouteList, RouteAcquire, RouteRenew, RouteRelease} }
