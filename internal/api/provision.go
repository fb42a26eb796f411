package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

// RouteProvision provisions accounts in bulk (aupctl import).
const RouteProvision = "POST /api/v1/provision"

// MaxProvisionBatch bounds the accounts of one provision request.
const MaxProvisionBatch = 500

// ProvisionRequest provisions up to MaxProvisionBatch accounts: each
// becomes (or stays) a provisioned mailbox or forward, a licence whatever
// its state. It is idempotent: an account provisioned as it is changes
// nothing and writes no history.
type ProvisionRequest struct {
	Accounts []ProvisionItem `json:"accounts"`
	ChangeRequest
}

// ProvisionItem is one account to provision. Type empty: as it is
// (mailbox for a new one); company empty: as it is, else the company of
// the address's domain.
type ProvisionItem struct {
	Address string            `json:"address"`
	Type    rules.AccountType `json:"type,omitempty"`
	Company string            `json:"company,omitempty"`
}

// ProvisionResponse reports what a provision request changed, one result
// per account in the order given.
type ProvisionResponse struct {
	Created   int                   `json:"created"`
	Updated   int                   `json:"updated"`
	Unchanged int                   `json:"unchanged"`
	Failed    int                   `json:"failed"`
	Results   []ProvisionItemResult `json:"results"`
}

// ProvisionItemResult is the outcome for one account: created, updated,
// unchanged or error (with the error).
type ProvisionItemResult struct {
	Address string `json:"address"`
	Result  string `json:"result"`
	Error   string `json:"error,omitempty"`
}

func (s *server) provision(w http.ResponseWriter, r *http.Request, p *principal) {
	var req ProvisionRequest
	if e := decode(r, &req, false); e != nil {
		s.fail(w, r, e)
		return
	}
	by, e := req.actor(p)
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
