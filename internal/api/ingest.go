package api

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/ingest"
)

// Ingester publishes verdict events onto the verdict stream
// (ingest.Ingester).
type Ingester interface {
	Publish(ctx context.Context, source string, inputs []ingest.Input, allow func(account string) bool) []ingest.Result
	Count(source string, rs ...ingest.Result)
}

// Defaults of the ingest endpoints.
const (
	DefaultIngestMaxBytes = 16 << 20
	DefaultIngestTimeout  = 30 * time.Second
	// MaxIngestEvents bounds the events of one NDJSON request.
	MaxIngestEvents = 10000
)

// ingestAnswer is the answer of every ingest endpoint.
type ingestAnswer struct {
	Accepted   int             `json:"accepted"`
	Duplicates int             `json:"duplicates"`
	Rejected   int             `json:"rejected"`
	Results    []ingest.Result `json:"results"`
}

func (s *server) ingestLimits() (int64, time.Duration) {
	n, d := s.opts.IngestMaxBytes, s.opts.IngestTimeout
	if n <= 0 {
		n = DefaultIngestMaxBytes
	}
	if d <= 0 {
		d = DefaultIngestTimeout
	}
	return n, d
}

// bodyLimit is the request body bound of a route: ingest bodies carry
// messages and batches.
func (s *server) bodyLimit(perm Permission) int64 {
	if perm == PermPublish {
		n, _ := s.ingestLimits()
		return n
	}
	return s.opts.MaxBodyBytes
}

// authenticateFor authenticates a request for a route that needs perm. Publishers
// may also send their token as the password of HTTP Basic
// authentication, the only credentials rspamd's HTTP client sends.
func (a *authenticator) authenticateFor(r *http.Request, perm Permission) (*principal, *apiError) {
	if perm == PermPublish {
		if _, pw, ok := r.BasicAuth(); ok {
			r2 := r.Clone(r.Context()) // its address and X-Forwarded-For count failures
			r2.Header.Set("Authorization", "Bearer "+pw)
			return a.authenticate(r2)
		}
	}
	return a.authenticate(r)
}

// ingestStart bounds reading the body and storing its events.
func (s *server) ingestStart(w http.ResponseWriter, r *http.Request) (context.Context, context.CancelFunc, bool) {
	if s.opts.Ingest == nil {
		s.fail(w, r, errf(http.StatusServiceUnavailable, "not_configured", "this aupd takes no verdicts over HTTP"))
		return nil, nil, false
	}
	_, d := s.ingestLimits()
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(d))
	_ = rc.SetWriteDeadline(time.Now().Add(d + 10*time.Second))
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return ctx, cancel, true
}

// rspamdRoute is the route of rspamd's metadata_exporter.
const rspamdRoute = "POST /api/v1/ingest/rspamd"

// MaxRspamdBody bounds what is read of rspamd's post: aupd keeps the
// ingest limit's worth (the start of the message) and reads and discards
// the rest, so that rspamd is never cut off mid-request (it would defer
// the message and count a failure). Only a post past this bound, or
// slower than the ingest timeout, is cut.
const MaxRspamdBody = 512 << 20

// readBody reads the whole body, decoding Content-Encoding gzip; cut says
// it (decoded) was longer than the ingest limit (what fits is returned).
// Another encoding answers 415.
func (s *server) readBody(w http.ResponseWriter, r *http.Request) (body []byte, cut bool, ok bool) {
	return s.readBodyDrain(w, r, false)
}

// readBodyDrain is readBody; with drain, it reads and discards what is
// past the limit to the end of the request (bounded by the route's body
// bound and the read deadline) before it returns.
func (s *server) readBodyDrain(w http.ResponseWriter, r *http.Request, drain bool) (body []byte, cut bool, ok bool) {
	limit, _ := s.ingestLimits()
	var src io.Reader = r.Body
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			s.fail(w, r, errf(http.StatusBadRequest, "bad_body", "Content-Encoding gzip, but the body is not gzip: %v", err))
			return nil, false, false
		}
		defer zr.Close()
		src = zr
	default:
		s.fail(w, r, errf(http.StatusUnsupportedMediaType, "unsupported_encoding", "Content-Encoding %q is not supported: send the body as is or gzip", enc))
		return nil, false, false
	}
	// The decoded size is bounded as the plain one: a zip bomb is cut at
	// the limit, never inflated further.
	body, err := io.ReadAll(io.LimitReader(src, limit+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		cut = true
	case err != nil:
		s.fail(w, r, errf(http.StatusBadRequest, "bad_body", "reading the body: %v", err))
		return nil, false, false
	}
	if int64(len(body)) > limit {
		body, cut = body[:limit], true
	}
	if drain {
		if n, err := io.Copy(io.Discard, r.Body); err != nil {
			s.log.Warn("request body not read to its end", "path", r.URL.Path, "discarded", n, "err", err)
		}
	}
	return body, cut, true
}

// allowFor limits a company-scoped publisher to its company's accounts.
func (s *server) allowFor(p *principal) func(string) bool {
	if p.company == "" {
		return nil
	}
	return func(account string) bool {
		c, ok := s.dir.ByAccount(account)
		return ok && c.ID == p.company
	}
}

// local says which addresses are local accounts: in some company's
// domains, or, for a company-scoped token, in its company's.
func (s *server) local(p *principal) func(string) bool {
	return func(account string) bool {
		c, ok := s.dir.ByAccount(account)
		return ok && (p.company == "" || c.ID == p.company)
	}
}

// answerIngest writes the results: okStatus when every event is stored,
// 503 (retry; nothing stored twice) when JetStream did not store one,
// refusedStatus when one was refused; each result says what became of its
// event.
func (s *server) answerIngest(w http.ResponseWriter, r *http.Request, results []ingest.Result, okStatus, refusedStatus int) {
	a := ingestAnswer{Results: results}
	status := okStatus
	unavailable := false
	for _, res := range results {
		switch res.Result {
		case ingest.ResultAccepted:
			a.Accepted++
		case ingest.ResultDuplicate:
			a.Duplicates++
		case ingest.ResultUnavailable:
			unavailable = true
			a.Rejected++
		default:
			a.Rejected++
		}
	}
	switch {
	case unavailable:
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "5")
	case a.Rejected > 0:
		status = refusedStatus
	}
	writeJSON(w, status, a)
}

// ingestVerdicts takes one contract event (application/json), or one per
// line (application/x-ndjson), validates each as the consumer does and
// publishes it with Nats-Msg-Id = its id.
func (s *server) ingestVerdicts(w http.ResponseWriter, r *http.Request, p *principal) {
	ctx, cancel, ok := s.ingestStart(w, r)
	if !ok {
		return
	}
	defer cancel()
	body, cut, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if cut {
		n, _ := s.ingestLimits()
		s.fail(w, r, errf(http.StatusRequestEntityTooLarge, "payload_too_large", "the body is larger than %d bytes; send fewer events per request", n))
		return
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var inputs []ingest.Input
	var lines []int // NDJSON: the line number of each input
	switch ct {
	case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines":
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(make([]byte, 64<<10), events.MaxPayload+2)
		for n := 1; sc.Scan(); n++ {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			lines = append(lines, n)
			if len(inputs) == MaxIngestEvents {
				s.fail(w, r, errf(http.StatusRequestEntityTooLarge, "too_many_events", "at most %d events per request", MaxIngestEvents))
				return
			}
			data := append([]byte(nil), line...)
			inputs = append(inputs, ingest.Input{Subject: ingest.SubjectOf(data), Data: data})
		}
		if err := sc.Err(); err != nil {
			s.fail(w, r, errf(http.StatusRequestEntityTooLarge, "payload_too_large", "a line is longer than the %d-byte event limit", events.MaxPayload))
			return
		}
	case "application/json", "":
		inputs = []ingest.Input{{Subject: ingest.SubjectOf(body), Data: body}}
	default:
		s.fail(w, r, errf(http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json (one event) or application/x-ndjson (one event per line)"))
		return
	}
	if len(inputs) == 0 {
		s.fail(w, r, errf(http.StatusBadRequest, "no_events", "the body holds no event"))
		return
	}
	results := s.opts.Ingest.Publish(ctx, ingest.SourceVerdicts, inputs, s.allowFor(p))
	for i := range lines {
		results[i].Line = lines[i]
	}
	s.answerIngest(w, r, results, http.StatusAccepted, http.StatusUnprocessableEntity)
}

// ingestRspamd takes what rspamd's metadata_exporter posts. It answers
// 200 on success, the only success rspamd 3.4 accepts, and 200 for a post
// it refuses too (with the reason in the body, logged and counted): with
// defer = true rspamd soft-rejects the message on any other answer, and a
// refusal is permanent, so a retry of the mail would not help. Only 503
// (not stored) and authentication failures answer otherwise.
func (s *server) ingestRspamd(w http.ResponseWriter, r *http.Request, p *principal) {
	ctx, cancel, ok := s.ingestStart(w, r)
	if !ok {
		return
	}
	defer cancel()
	// The whole post is read, what is past the limit discarded: a message
	// cut at the limit only shortens its sample, and rspamd, never cut off,
	// does not defer the message (which its MTA would retry, scan and
	// post again).
	body, _, ok := s.readBodyDrain(w, r, true)
	if !ok {
		return
	}
	refuse := func(reason, detail string) {
		res := ingest.Refused(reason, detail)
		s.opts.Ingest.Count(ingest.SourceRspamd, res)
		if reason != ingest.ReasonNoAccount && reason != ingest.ReasonSoftReject {
			// Not normal: the exporter's configuration or the MTA's
			// users need a look.
			s.log.Warn("rspamd post refused", "reason", reason, "detail", detail, "token", p.name)
		}
		writeJSON(w, http.StatusOK, ingestAnswer{Rejected: 1, Results: []ingest.Result{res}})
	}
	rs, err := ingest.ReadRspamd(r.Header, body)
	if err != nil {
		refuse(ingest.ReasonNotRspamd, err.Error())
		return
	}
	vs, err := rs.Verdicts(s.opts.Now())
	var re *ingest.RefusedError
	if errors.As(err, &re) {
		// no_local_account is normal for bounces (no envelope sender).
		refuse(re.Reason, re.Detail)
		return
	}
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.publishBuilt(ctx, w, r, ingest.SourceRspamd, vs, p, http.StatusOK, http.StatusOK)
}

// ingestARF takes one feedback-loop report (the raw message).
func (s *server) ingestARF(w http.ResponseWriter, r *http.Request, p *principal) {
	ctx, cancel, ok := s.ingestStart(w, r)
	if !ok {
		return
	}
	defer cancel()
	// A report longer than the body limit is counted from what it
	// carries (arf.Parse), as a cut one is.
	body, _, ok := s.readBody(w, r)
	if !ok {
		return
	}
	v, err := ingest.ARF(body, s.local(p), s.opts.Now())
	if re := (*ingest.RefusedError)(nil); p.company != "" && errors.As(err, &re) && re.Reason == ingest.ReasonNoAccount {
		// Not this token's company's sender: is it another company's?
		if _, err2 := ingest.ARF(body, s.local(&principal{}), s.opts.Now()); err2 == nil {
			err = &ingest.RefusedError{Reason: ingest.ReasonOutOfScope, Detail: "the original's sender is another company's account; this token may only report its own company's"}
		}
	}
	var re *ingest.RefusedError
	if errors.As(err, &re) {
		res := ingest.Refused(re.Reason, re.Detail)
		s.opts.Ingest.Count(ingest.SourceARF, res)
		writeJSON(w, http.StatusUnprocessableEntity, ingestAnswer{Rejected: 1, Results: []ingest.Result{res}})
		return
	}
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.publishBuilt(ctx, w, r, ingest.SourceARF, []*events.Verdict{v}, p, http.StatusAccepted, http.StatusUnprocessableEntity)
}

func (s *server) publishBuilt(ctx context.Context, w http.ResponseWriter, r *http.Request, source string, vs []*events.Verdict, p *principal, okStatus, refusedStatus int) {
	inputs := make([]ingest.Input, 0, len(vs))
	for _, v := range vs {
		in, err := ingest.EventInput(v)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		inputs = append(inputs, in)
	}
	s.answerIngest(w, r, s.opts.Ingest.Publish(ctx, source, inputs, s.allowFor(p)), okStatus, refusedStatus)
}
