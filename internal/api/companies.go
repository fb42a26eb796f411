package api

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/rules"
)

func companyJSON(c *companies.Company) *Company {
	out := &Company{ID: c.ID, Name: c.Name, Domains: c.Domains, AbuseContact: c.AbuseContact, DeskContacts: c.DeskContacts, Threshold: c.Threshold, Allowlist: c.Allowlist, Source: c.Source}
	if out.Domains == nil {
		out.Domains = []string{}
	}
	out.VolumeAllowlist = c.VolumeAllowlist
	if c.Volume != nil {
		vs := make([]VolumeLimit, 0, len(*c.Volume))
		for _, l := range *c.Volume {
			vs = append(vs, VolumeLimit{Name: l.Name, Window: l.Window.String(), Messages: l.Messages, Recipients: l.Recipients, Action: string(l.Action)})
		}
		out.Volume = &vs
	}
	if l := c.Lockout; l != nil {
		out.Lockout = &Lockout{MaxFailures: l.MaxFailures}
		if l.Window > 0 {
			out.Lockout.Window = l.Window.String()
		}
		if l.Duration > 0 {
			out.Lockout.Duration = l.Duration.String()
		}
	}
	return out
}

// companyOf checks a company request and returns the company it sets,
// of id the path's.
func companyOf(req *CompanyRequest, id string) (companies.Company, *apiError) {
	if req.ID != "" && req.ID != id {
		return companies.Company{}, errf(http.StatusBadRequest, "invalid", "the id in the body (%s) is not the id of the path (%s)", clip(req.ID, 70), clip(id, 70))
	}
	if req.Source != "" {
		return companies.Company{}, errf(http.StatusBadRequest, "invalid", "source is set by aupd")
	}
	c := companies.Company{ID: id, Name: req.Name, Domains: slices.Clone(req.Domains), AbuseContact: req.AbuseContact, DeskContacts: slices.Clone(req.DeskContacts), Threshold: req.Threshold, Allowlist: slices.Clone(req.Allowlist),
		VolumeAllowlist: slices.Clone(req.VolumeAllowlist)}
	if req.Volume != nil {
		vs, aerr := volumeOf(*req.Volume)
		if aerr != nil {
			return companies.Company{}, aerr
		}
		c.Volume = &vs
	}
	if l := req.Lockout; l != nil {
		c.Lockout = &companies.Lockout{MaxFailures: l.MaxFailures}
		for _, f := range []struct {
			name string
			v    string
			dst  *time.Duration
		}{{"lockout.window", l.Window, &c.Lockout.Window}, {"lockout.duration", l.Duration, &c.Lockout.Duration}} {
			if f.v == "" {
				continue
			}
			d, err := time.ParseDuration(f.v)
			if err != nil {
				return companies.Company{}, errf(http.StatusBadRequest, "invalid", "%s: %q is not a duration such as 15m", f.name, clip(f.v, 40))
			}
			*f.dst = d
		}
	}
	if err := c.Normalize(); err != nil {
		return companies.Company{}, errf(http.StatusBadRequest, "invalid", "%s", err.Error())
	}
	return c, nil
}

// volumeOf turns the volume limits of a company request into the
// company's; Normalize checks them.
func volumeOf(in []VolumeLimit) ([]rules.VolumeLimit, *apiError) {
	out := make([]rules.VolumeLimit, 0, len(in))
	for i, l := range in {
		w, err := time.ParseDuration(l.Window)
		if err != nil {
			return nil, errf(http.StatusBadRequest, "invalid", "volume[%d].window: %q is not a duration such as 1h", i, clip(l.Window, 40))
		}
		out = append(out, rules.VolumeLimit{Name: l.Name, Window: w, Messages: l.Messages, Recipients: l.Recipients, Action: rules.VolumeAction(l.Action)})
	}
	return out, nil
}

// companyFor answers 404 for a company outside the token's scope.
func (s *server) companyFor(w http.ResponseWriter, r *http.Request, p *principal) (*companies.Company, bool) {
	id := r.PathValue("id")
	c, ok := s.dir.ByID(id)
	if !ok || (p.company != "" && p.company != id) {
		s.fail(w, r, errNoCompany())
		return nil, false
	}
	return c, true
}

// refresh picks up companies changed by another aupd process.
func (s *server) refresh(r *http.Request) {
	if err := s.dir.Refresh(r.Context()); err != nil {
		s.log.Warn("refresh companies", "err", err)
	}
}

func (s *server) listCompanies(w http.ResponseWriter, r *http.Request, p *principal) {
	q := r.URL.Query()
	if e := onlyParams(q, "domain", "cursor", "limit"); e != nil {
		s.fail(w, r, e)
		return
	}
	limit, e := intParam(q, "limit", 100, 1, 1000)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	s.refresh(r)
	out := CompanyList{Companies: []*Company{}}
	if d := q.Get("domain"); d != "" {
		if c, ok := s.dir.ByDomain(strings.ToLower(d)); ok && (p.company == "" || p.company == c.ID) {
			out.Companies = append(out.Companies, companyJSON(c))
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	after := q.Get("cursor")
	all := s.dir.All()
	i, _ := slices.BinarySearchFunc(all, after, func(c companies.Company, id string) int { return strings.Compare(c.ID, id) })
	if i < len(all) && all[i].ID == after {
		i++
	}
	for ; i < len(all); i++ {
		c := all[i]
		if p.company != "" && p.company != c.ID {
			continue
		}
		if len(out.Companies) == limit {
			out.NextCursor = out.Companies[limit-1].ID
			break
		}
		out.Companies = append(out.Companies, companyJSON(&c))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) getCompany(w http.ResponseWriter, r *http.Request, p *principal) {
	s.refresh(r)
	c, ok := s.companyFor(w, r, p)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, companyJSON(c))
}

func (s *server) putCompany(w http.ResponseWriter, r *http.Request, p *principal) {
	id := r.PathValue("id")
	var req CompanyRequest
	if e := decode(r, &req, false); e != nil {
		s.fail(w, r, e)
		return
	}
	if strings.TrimSpace(req.Reason) == "" {
		s.fail(w, r, errf(http.StatusBadRequest, "reason_required", "a reason is required for every change"))
		return
	}
	c, e := companyOf(&req, id)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	s.refresh(r)
	_, existed := s.dir.ByID(id)
	if err := s.dir.Put(r.Context(), c); err != nil {
		s.failErr(w, r, err)
		return
	}
	s.log.Info("company saved", "company", id, "actor", p.name, "reason", req.Reason, "created", !existed)
	status := http.StatusOK
	if !existed {
		status = http.StatusCreated
	}
	saved, ok := s.dir.ByID(id)
	if !ok {
		saved = &c
	}
	writeJSON(w, status, companyJSON(saved))
}

func (s *server) deleteCompany(w http.ResponseWriter, r *http.Request, p *principal) {
	id := r.PathValue("id")
	var req ChangeRequest
	if e := decode(r, &req, true); e != nil {
		s.fail(w, r, e)
		return
	}
	if q := r.URL.Query().Get("reason"); q != "" && req.Reason == "" {
		req.Reason = q
	}
	if strings.TrimSpace(req.Reason) == "" {
		s.fail(w, r, errf(http.StatusBadRequest, "reason_required", "a reason is required for every change"))
		return
	}
	s.refresh(r)
	if err := s.dir.Delete(r.Context(), id); err != nil {
		s.failErr(w, r, err)
		return
	}
	s.log.Info("company deleted", "company", id, "actor", p.name, "reason", req.Reason)
	writeJSON(w, http.StatusOK, map[string]any{"deleted": true, "id": id})
}

func (s *server) licences(w http.ResponseWriter, r *http.Request, p *principal) {
	s.refresh(r)
	c, ok := s.companyFor(w, r, p)
	if !ok {
		return
	}
	l, err := s.store.CountLicences(r.Context(), c.ID, s.opts.Now())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}
