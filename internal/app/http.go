package app

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func (a *App) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metricsHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, r *http.Request) {
		// Reloading only re-reads the operator's own file; it needs no
		// token, but it is only served on the admin listener.
		if err := a.reload(); err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]any{"error": map[string]string{"code": "reload_failed", "message": err.Error()}})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
	})
	return mux
}

func (a *App) metricsHandler() http.Handler {
	return promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{})
}

// readyz is ready only when NATS and Redis both answer.
func (a *App) readyz(w http.ResponseWriter, r *http.Request) {
	checks := map[string]string{"nats": "ok", "redis": "ok"}
	ok := a.ready.Load()
	if !ok {
		checks["aupd"] = "starting or stopping"
	}
	if a.nc.Status() != nats.CONNECTED {
		checks["nats"] = a.nc.Status().String()
		ok = false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.rdb.Ping(ctx).Err(); err != nil {
		checks["redis"] = err.Error()
		ok = false
	}
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, checks)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
