package api

import "github.com/aupd/aupd/internal/api/apitypes"

// The request and response bodies of the API, defined in apitypes so
// that a client needs no more than that package.
type (
	Account             = apitypes.Account
	AccountList         = apitypes.AccountList
	AccountRequest      = apitypes.AccountRequest
	ChangeRequest       = apitypes.ChangeRequest
	ChangeResponse      = apitypes.ChangeResponse
	Company             = apitypes.Company
	CompanyList         = apitypes.CompanyList
	CompanyRequest      = apitypes.CompanyRequest
	DecideRequest       = apitypes.DecideRequest
	DecideResponse      = apitypes.DecideResponse
	HistoryPage         = apitypes.HistoryPage
	LastSuspension      = apitypes.LastSuspension
	Lockout             = apitypes.Lockout
	VolumeLimit         = apitypes.VolumeLimit
	NoteRequest         = apitypes.NoteRequest
	NoteResponse        = apitypes.NoteResponse
	ProvisionItem       = apitypes.ProvisionItem
	ProvisionItemResult = apitypes.ProvisionItemResult
	ProvisionRequest    = apitypes.ProvisionRequest
	ProvisionResponse   = apitypes.ProvisionResponse
	ReinstateRequest    = apitypes.ReinstateRequest
	SuspendRequest      = apitypes.SuspendRequest
)

// MaxProvisionBatch bounds the accounts of one provision request.
const MaxProvisionBatch = apitypes.MaxProvisionBatch
