package app

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/aupd/aupd/internal/api"
	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/desk"
	"github.com/aupd/aupd/internal/sessionlock"
)

// controlRoute is one of the listener's own endpoints and what it needs
// (auth.Allowed); Perm "" is public.
type controlRoute struct {
	api.Route
	h http.Handler
}

// controlRoutes are the listener's own endpoints. Reloading needs an admin
// token without a company scope (auth.PermControl), like any other change
// of aupd's behaviour; the tokens are the reloaded ones.
func (a *App) controlRoutes(metrics http.Handler) []controlRoute {
	return []controlRoute{
		{api.Route{Pattern: "GET /metrics"}, metrics},
		{api.Route{Pattern: "GET /healthz"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		})},
		{api.Route{Pattern: "GET /readyz"}, http.HandlerFunc(a.readyz)},
		{api.Route{Pattern: "POST /-/reload", Perm: auth.PermControl}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := a.reload(); err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]any{"error": map[string]string{"code": "reload_failed", "message": err.Error()}})
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
		})},
	}
}

// ListenerRoutes is every route of the HTTP listener and the permission
// it needs: the control endpoints, the admin API, the session locks and
// the abuse desk (when enabled). docs/api.md's permission table is made
// from it (TestPermissionTableDoc).
func ListenerRoutes() []api.Route {
	var out []api.Route
	for _, rt := range (&App{}).controlRoutes(nil) {
		out = append(out, rt.Route)
	}
	out = append(out, api.Routes()...)
	for _, p := range sessionlock.Routes() {
		out = append(out, api.Route{Pattern: p, Perm: auth.PermSessionLock})
	}
	for _, rt := range desk.Routes() {
		out = append(out, api.Route{Pattern: rt.Pattern, Perm: rt.Perm})
	}
	return out
}

func (a *App) routes(tokens *api.Tokens) *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range a.controlRoutes(a.metricsHandler()) {
		h := rt.h
		if rt.Perm != "" {
			h = api.GuardTokens(tokens, rt.Perm, h)
		}
		mux.Handle(rt.Pattern, h)
	}
	return mux
}

// Timeouts of aupd's HTTP servers: a client that sends its request or
// reads its answer too slowly, or keeps an idle connection, is cut off.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 30 * time.Second
	httpWriteTimeout      = 60 * time.Second
	httpIdleTimeout       = 2 * time.Minute
)

// newHTTPServer returns an http.Server for h with aupd's timeouts.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout: httpReadTimeout, WriteTimeout: httpWriteTimeout, IdleTimeout: httpIdleTimeout}
}

func (a *App) metricsHandler() http.Handler {
	return promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{})
}

// readyz answers from the readiness checker's last round, at once
// (docs/runbooks.md, "Readiness checks").
func (a *App) readyz(w http.ResponseWriter, r *http.Request) {
	code, checks := a.checker.answer()
	writeJSON(w, code, checks)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
