package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/aupd/aupd/internal/replay"
)

// Replayer tries a threshold over the stored verdicts (replay.Replayer).
type Replayer interface {
	Run(ctx context.Context, req replay.Request) (*replay.Report, error)
}

// replay answers GET /api/v1/replay?threshold=N[&company=ID][&since=24h]:
// the accounts the threshold would have suspended in the period, beside
// what happened. It acts on nothing. A company-scoped token replays its
// own company only.
func (s *server) replay(w http.ResponseWriter, r *http.Request, p *principal) {
	if s.opts.Replay == nil {
		s.fail(w, r, errf(http.StatusServiceUnavailable, "not_configured", "replay is not available on this aupd"))
		return
	}
	q := r.URL.Query()
	n, err := strconv.Atoi(q.Get("threshold"))
	if err != nil || n < 1 {
		s.fail(w, r, errf(http.StatusBadRequest, "invalid", "threshold must be a whole number of at least 1"))
		return
	}
	req := replay.Request{Threshold: n, Company: q.Get("company")}
	if v := q.Get("since"); v != "" {
		if req.Since, err = time.ParseDuration(v); err != nil || req.Since <= 0 {
			s.fail(w, r, errf(http.StatusBadRequest, "invalid", "since must be a duration such as 24h or 90m"))
			return
		}
	}
	if p.company != "" {
		if req.Company != "" && req.Company != p.company {
			s.fail(w, r, errf(http.StatusForbidden, "forbidden", "this token may only replay company %s", p.company))
			return
		}
		req.Company = p.company
	} else if req.Company != "" {
		if _, ok := s.dir.ByID(req.Company); !ok {
			s.fail(w, r, errNoCompany())
			return
		}
	}
	rep, err := s.opts.Replay.Run(r.Context(), req)
	if errors.Is(err, replay.ErrInvalid) {
		s.fail(w, r, errf(http.StatusBadRequest, "invalid", "%s", err.Error()))
		return
	}
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
