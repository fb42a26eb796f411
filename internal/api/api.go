// Package api is aupd's HTTP admin API: accounts (status, suspensions,
// history, evidence), licence counts, webmail access decisions and the
// company directory, under /api/v1/, as described by openapi.yaml (served
// at /api/v1/openapi.yaml).
//
// Every request but the OpenAPI document carries a bearer token from the
// config; its role says what it may do and its optional company scope which
// accounts it sees. A token limited to one company gets 404, exactly as for
// an account that does not exist, for accounts and companies outside it, so
// that it cannot probe what exists elsewhere, and 403 when it asks to list
// another company.
package api

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/store"
)

// OpenAPI is the API's OpenAPI 3 document; docs/openapi.yaml is a copy.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Notices is what the API needs from the notifier: the delivery state of
// the notice of one suspension, and its evidence.txt. ok is false when
// there is no such notice.
type Notices interface {
	NoticeState(ctx context.Context, account, id string) (state any, ok bool, err error)
	Evidence(ctx context.Context, account, id string) (data []byte, ok bool, err error)
}

// Options are what the API needs. Store, Companies, Publisher and Cap (or
// CapOf) are required.
type Options struct {
	Store     *store.Store
	Companies *companies.Directory
	// Publisher publishes the account events of every change at once
	// (store.FlushOutbox).
	Publisher store.Publisher
	// Notices gives notice states and evidence.txt; nil: not available
	// (evidence answers 404, accounts show no notice state).
	Notices Notices
	Auth    AuthConfig
	// Tokens, when set, is used instead of Auth: a token set the caller
	// reloads (SIGHUP) and shares with GuardTokens.
	Tokens  *Tokens
	Logger  *slog.Logger          // nil: discard
	Metrics prometheus.Registerer // nil: no metrics
	Now     func() time.Time      // nil: time.Now
	// Window is the AUP rolling window (default 24h) and Cap the per-account
	// cap of each counting set: a count at the cap is "at least".
	Window time.Duration
	Cap    int
	// CapOf, when set, gives the cap of one account (the worker's
	// max(aup.max_tracked, threshold + 1) with its company's threshold)
	// and overrides Cap.
	CapOf func(account string) int
	// Threshold, when set, gives an account's AUP threshold now (its
	// company's or the provider's); reading one account shows it.
	Threshold func(account string) int
	// MaxBodyBytes bounds request bodies (default 64 KiB).
	MaxBodyBytes int64
	// Ingest takes verdicts over HTTP (the /api/v1/ingest/ endpoints) and
	// Replay tries a threshold over the stored verdicts; nil: those
	// endpoints answer 503 not_configured.
	Ingest Ingester
	Replay Replayer
	// IngestMaxBytes bounds an ingest request's body (default 16 MiB);
	// IngestTimeout bounds reading it and storing its events (default 30s).
	IngestMaxBytes int64
	IngestTimeout  time.Duration
}

// DefaultMaxBodyBytes is the default bound of request bodies.
const DefaultMaxBodyBytes = 64 << 10

func (o *Options) validate() error {
	switch {
	case o.Store == nil:
		return errors.New("api: no store")
	case o.Companies == nil:
		return errors.New("api: no company directory")
	case o.Publisher == nil:
		return errors.New("api: no publisher")
	case o.Cap <= 0 && o.CapOf == nil:
		return errors.New("api: cap must be positive")
	case o.Window < 0 || o.MaxBodyBytes < 0:
		return errors.New("api: window and max body size must not be negative")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Window == 0 {
		o.Window = 24 * time.Hour
	}
	if o.CapOf == nil {
		c := o.Cap
		o.CapOf = func(string) int { return c }
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	return nil
}

type server struct {
	opts    Options
	store   *store.Store
	dir     *companies.Directory
	log     *slog.Logger
	auth    *authenticator
	mux     *http.ServeMux
	metrics *metrics
}

// New returns the admin API's handler. It serves /api/v1/ only; mount it
// at the root of the HTTP server (or next to /metrics and the health
// checks).
func New(opts Options) (http.Handler, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	tokens := opts.Tokens
	if tokens == nil {
		var err error
		if tokens, err = NewTokens(opts.Auth); err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
	}
	authn := tokens.a
	m, err := newMetrics(opts.Metrics)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	s := &server{opts: opts, store: opts.Store, dir: opts.Companies, log: opts.Logger.With("component", "api"), auth: authn, mux: http.NewServeMux(), metrics: m}
	s.routes()
	return s, nil
}

// route is one endpoint and the permission it needs (Allowed); "" is
// public.
type route struct {
	pattern string
	perm    Permission
	h       func(w http.ResponseWriter, r *http.Request, p *principal)
}

func (s *server) routeTable() []route {
	return []route{
		{"GET /api/v1/openapi.yaml", "", s.openAPI},
		{"GET /api/v1/accounts", PermRead, s.listAccounts},
		{"GET /api/v1/accounts/{account}", PermRead, s.getAccount},
		{"PUT /api/v1/accounts/{account}", PermManage, s.putAccount},
		{RouteProvision, PermManage, s.provision},
		{"DELETE /api/v1/accounts/{account}", PermManage, s.deleteAccount},
		{"POST /api/v1/accounts/{account}/suspend", PermAct, s.services(true, s.store.Suspend)},
		{"POST /api/v1/accounts/{account}/reinstate", PermAct, s.services(false, s.store.Reinstate)},
		{"POST /api/v1/accounts/{account}/lock", PermAct, s.status(actionLock)},
		{"POST /api/v1/accounts/{account}/unlock", PermAct, s.status(actionUnlock)},
		{"POST /api/v1/accounts/{account}/end-lockout", PermAct, s.status(actionEndLockout)},
		{"POST /api/v1/accounts/{account}/maintenance", PermManage, s.status(actionMaintenance)},
		{"POST /api/v1/accounts/{account}/close", PermManage, s.status(actionClose)},
		{"POST /api/v1/accounts/{account}/activate", PermManage, s.status(actionActivate)},
		{"GET /api/v1/accounts/{account}/history", PermRead, s.history},
		{"POST /api/v1/accounts/{account}/notes", PermAct, s.addNote},
		{"GET /api/v1/accounts/{account}/suspensions/{id}/evidence.txt", PermRead, s.evidence},
		{"POST /api/v1/decide", PermRead, s.decide},
		{"GET /api/v1/companies", PermRead, s.listCompanies},
		{"GET /api/v1/companies/{id}", PermRead, s.getCompany},
		{"PUT /api/v1/companies/{id}", PermCompanies, s.putCompany},
		{"DELETE /api/v1/companies/{id}", PermCompanies, s.deleteCompany},
		{"GET /api/v1/companies/{id}/licences", PermRead, s.licences},
		{"POST /api/v1/ingest/verdicts", PermPublish, s.ingestVerdicts},
		{rspamdRoute, PermPublish, s.ingestRspamd},
		{"POST /api/v1/ingest/arf", PermPublish, s.ingestARF},
		{"GET /api/v1/replay", PermAct, s.replay},
	}
}

func (s *server) routes() {
	for _, rt := range s.routeTable() {
		s.mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			var p *principal
			if rt.perm != "" {
				var e *apiError
				if p, e = s.auth.authenticateFor(r, rt.perm); e != nil {
					if e.status == http.StatusUnauthorized {
						w.Header().Set("WWW-Authenticate", `Bearer realm="aupd"`)
					}
					s.fail(w, r, e)
					return
				}
				if !p.allowed(rt.perm) {
					s.fail(w, r, errf(http.StatusForbidden, "forbidden", "token %s has role %s; this needs %s", p.name, p.role, rt.perm.Needs()))
					return
				}
			}
			if r.Body != nil {
				limit := s.bodyLimit(rt.perm)
				if rt.pattern == rspamdRoute {
					// rspamd's post is read to its end, past the ingest
					// limit (ingestRspamd).
					limit = max(limit, MaxRspamdBody)
				}
				r.Body = http.MaxBytesReader(w, r.Body, limit)
			}
			rt.h(w, r, p)
		})
	}
}

// ServeHTTP answers unknown paths and methods with JSON errors too, and
// counts every request.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic serving request", "path", r.URL.Path, "err", v)
			if sw.status == 0 {
				s.fail(sw, r, errf(http.StatusInternalServerError, "internal", "internal error"))
			}
		}
		s.metrics.observe(r.Pattern, sw.status, time.Since(start))
	}()
	if _, pattern := s.mux.Handler(r); pattern == "" {
		// Let the mux say whether this is 404 or 405 (with Allow), but in
		// JSON.
		rec := &recorder{header: http.Header{}}
		s.mux.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); allow != "" {
			sw.Header().Set("Allow", allow)
		}
		if rec.Code == http.StatusMethodNotAllowed {
			s.fail(sw, r, errf(rec.Code, "method_not_allowed", "method %s is not allowed here", r.Method))
			return
		}
		s.fail(sw, r, errf(http.StatusNotFound, "no_route", "no such endpoint: %s %s", r.Method, r.URL.Path))
		return
	}
	s.mux.ServeHTTP(sw, r)
}

// recorder keeps only the status and headers of a response.
type recorder struct {
	header http.Header
	Code   int
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) WriteHeader(code int)        { r.Code = code }

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *server) openAPI(w http.ResponseWriter, _ *http.Request, _ *principal) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Content-Length", strconv.Itoa(len(OpenAPI)))
	_, _ = w.Write(OpenAPI)
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	publish  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_api_requests_total", Help: "Admin API requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "aupd_api_request_duration_seconds", Help: "Admin API request duration by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
		publish: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aupd_api_publish_errors_total", Help: "Account events the admin API could not publish at once (they stay in the outbox).",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.publish} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(pattern string, code int, d time.Duration) {
	if pattern == "" {
		pattern = "unmatched"
	}
	if code == 0 {
		code = http.StatusOK
	}
	m.requests.WithLabelValues(pattern, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(pattern).Observe(d.Seconds())
}
