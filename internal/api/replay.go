package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/aupd/aupd/internal/replay"
	"github.com/aupd/aupd/rules"
)

// Replayer tries a threshold or a spam rate over the stored verdicts,
// and a volume limit against the volume records (replay.Replayer).
type Replayer interface {
	Run(ctx context.Context, req replay.Request) (*replay.Report, error)
}

// replay answers GET /api/v1/replay?[threshold=N][&rate=R&min_spam=M]
// [&volume_window=1h&volume_messages=N|volume_recipients=N
// [&volume_action=throttle|suspend]][&company=ID][&since=24h]: the
// accounts the rules tried would have suspended in the period, and
// those the volume limit tried would have stopped, beside what happened.
// It acts on nothing. A company-scoped token replays its own company
// only.
func (s *server) replay(w http.ResponseWriter, r *http.Request, p *principal) {
	if s.opts.Replay == nil {
		s.fail(w, r, errf(http.StatusServiceUnavailable, "not_configured", "replay is not available on this aupd"))
		return
	}
	req, bad := replayRequest(r.URL.Query())
	if bad != nil {
		s.fail(w, r, bad)
		return
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

// replayRequest reads a replay's query. It checks the form of each value;
// the replay checks what they ask for (replay.ErrInvalid).
func replayRequest(q url.Values) (replay.Request, *apiError) {
	req := replay.Request{Company: q.Get("company")}
	var err error
	if v := q.Get("threshold"); v != "" {
		if req.Threshold, err = strconv.Atoi(v); err != nil {
			return req, errf(http.StatusBadRequest, "invalid", "threshold must be a whole number of at least 1")
		}
	}
	rate, minSpam := q.Get("rate"), q.Get("min_spam")
	if rate != "" || minSpam != "" {
		req.SpamRate = &rules.SpamRateSetting{}
	}
	if rate != "" {
		f, err := strconv.ParseFloat(rate, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return req, errf(http.StatusBadRequest, "invalid", "rate must be a fraction such as 0.05 (5%%), or 0 for the spam-rate rule off")
		}
		req.SpamRate.Rate = f
	}
	if minSpam != "" {
		if req.SpamRate.MinSpam, err = strconv.Atoi(minSpam); err != nil {
			return req, errf(http.StatusBadRequest, "invalid", "min_spam must be a whole number of at least 1")
		}
	}
	if bad := volumeRequest(q, &req); bad != nil {
		return req, bad
	}
	if v := q.Get("since"); v != "" {
		if req.Since, err = time.ParseDuration(v); err != nil || req.Since <= 0 {
			return req, errf(http.StatusBadRequest, "invalid", "since must be a duration such as 24h or 90m")
		}
	}
	return req, nil
}

// volumeRequest reads the volume limit a replay tries, if any: its
// window, its messages or recipients, and its action.
func volumeRequest(q url.Values, req *replay.Request) *apiError {
	window, msgs, rcpts, action := q.Get("volume_window"), q.Get("volume_messages"), q.Get("volume_recipients"), q.Get("volume_action")
	if window == "" && msgs == "" && rcpts == "" && action == "" {
		return nil
	}
	l := &rules.VolumeLimit{Action: rules.VolumeAction(action)}
	var err error
	if window != "" {
		if l.Window, err = time.ParseDuration(window); err != nil {
			return errf(http.StatusBadRequest, "invalid", "volume_window must be a duration such as 1h or 30m")
		}
	}
	for _, c := range []struct {
		name, v string
		n       *int
	}{{"volume_messages", msgs, &l.Messages}, {"volume_recipients", rcpts, &l.Recipients}} {
		if c.v == "" {
			continue
		}
		if *c.n, err = strconv.Atoi(c.v); err != nil {
			return errf(http.StatusBadRequest, "invalid", "%s must be a whole number of at least 1", c.name)
		}
	}
	req.Volume = l
	return nil
}
