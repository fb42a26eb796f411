package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
)

// RouteProvision provisions accounts in bulk (aupctl import).
const RouteProvision = "POST /api/v1/provision"

func (s *server) provision(w http.ResponseWriter, r *http.Request, p *principal) {
	var req ProvisionRequest
	if e := decode(r, &req, false); e != nil {
		s.fail(w, r, e)
		return
	}
	by, e := changeActor(req.ChangeRequest, p)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	if n := len(req.Accounts); n == 0 || n > MaxProvisionBatch {
		s.fail(w, r, errf(http.StatusBadRequest, "invalid", "accounts: give 1 to %d accounts per request, got %d", MaxProvisionBatch, n))
		return
	}
	s.refresh(r)
	out := ProvisionResponse{Results: make([]ProvisionItemResult, 0, len(req.Accounts))}
	for _, it := range req.Accounts {
		res := s.provisionOne(r.Context(), p, it, by)
		switch res.Result {
		case string(store.ProvisionCreated):
			out.Created++
		case string(store.ProvisionUpdated):
			out.Updated++
		case string(store.ProvisionUnchanged):
			out.Unchanged++
		default:
			out.Failed++
		}
		out.Results = append(out.Results, res)
	}
	s.log.Info("accounts provisioned", "actor", by.Name, "created", out.Created, "updated", out.Updated,
		"unchanged", out.Unchanged, "failed", out.Failed)
	writeJSON(w, http.StatusOK, out)
}

func (s *server) provisionOne(ctx context.Context, p *principal, it ProvisionItem, by store.Actor) ProvisionItemResult {
	fail := func(format string, args ...any) ProvisionItemResult {
		return ProvisionItemResult{Address: clip(it.Address, 320), Result: "error", Error: fmt.Sprintf(format, args...)}
	}
	addr, err := events.NormalizeAccount(it.Address)
	if err != nil {
		return fail("address: %v", err)
	}
	if !s.inScope(p, addr) {
		// As for one account: a company's token cannot reach others'.
		return fail("no such account in the token's company")
	}
	if it.Type != "" && !it.Type.Valid() {
		return fail("type %q: use mailbox or forward", clip(string(it.Type), 40))
	}
	company := it.Company
	if company == "" {
		if c, ok := s.dir.ByAccount(addr); ok {
			company = c.ID
		}
	} else if _, ok := s.dir.ByID(company); !ok || (p.company != "" && company != p.company) {
		return fail("unknown company %q", clip(company, 70))
	}
	result, op, err := s.store.Provision(ctx, addr, it.Type, company, by)
	if err != nil {
		s.log.Warn("provision", "account", addr, "err", err)
		return fail("%v", err)
	}
	if op.Changed {
		s.publish(ctx, addr)
	}
	return ProvisionItemResult{Address: addr, Result: string(result)}
}
