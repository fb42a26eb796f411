package apitypes

import "github.com/aupd/aupd/rules"

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
