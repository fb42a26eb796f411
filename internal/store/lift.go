package store

import (
	"errors"
	"fmt"

	"github.com/aupd/aupd/rules"
)

// The doors a manual change comes through, recorded as HistoryEntry.Via.
const (
	ViaToken = "token" // the admin API with a bearer token (and aupctl)
	ViaDesk  = "desk"  // a desk session signed in with a token
	ViaLink  = "link"  // the signed link of an abuse notice
)

// ErrProviderSuspension is the error of a company-scoped actor that tries
// to lift a suspension the provider set.
var ErrProviderSuspension = errors.New("suspended by the provider")

// LiftError says which suspension a scoped actor may not lift. It wraps
// ErrProviderSuspension.
type LiftError struct {
	Service    rules.Service
	Suspension Suspension
}

func (e *LiftError) Error() string {
	return fmt.Sprintf("%s was suspended by the provider (%s, reason %s); only the provider can lift it: name the services you may lift, or ask the provider",
		e.Service, e.Suspension.Actor, e.Suspension.Reason)
}

func (e *LiftError) Unwrap() error { return ErrProviderSuspension }

// MayLift is who may lift what: the provider (scope "") lifts anything; an
// actor limited to one company (its token, desk session or a notice's
// signed link) lifts the automatic AUP suspension and suspensions set by
// that company, never one the provider set.
func MayLift(scope string, a *Account, sus Suspension) bool {
	switch {
	case scope == "":
		return true
	case a.AUP != "" && sus.ID == a.AUP:
		return true
	}
	return sus.Scope == scope
}
