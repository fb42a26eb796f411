package ingest

import (
	"fmt"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/arf"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// ARF maps one feedback-loop report to a complaint event against the
// local sender of the original message. local says which addresses belong
// to a company. Reports that are not ARF, are no complaint, or whose
// original names no local sender are refused (*RefusedError).
func ARF(data []byte, local func(string) bool, now time.Time) (*events.Verdict, error) {
	r, err := arf.Parse(data)
	if err != nil {
		if e, ok := arf.AsError(err); ok {
			return nil, &RefusedError{Reason: e.Reason, Detail: e.Detail}
		}
		return nil, &RefusedError{Reason: arf.ReasonNotARF, Detail: err.Error()}
	}
	verdict, ok := r.Verdict()
	if !ok {
		return nil, &RefusedError{Reason: arf.ReasonNotFeedback, Detail: fmt.Sprintf("Feedback-Type %q is not a complaint about a message", oneLine(r.FeedbackType))}
	}
	senders := r.Senders()
	account := ""
	for _, s := range senders {
		if a, err := events.NormalizeAccount(s); err == nil && local(a) {
			account = a
			break
		}
	}
	if account == "" {
		shown := strings.Join(senders, ", ")
		if shown == "" {
			shown = "no sender address"
		}
		return nil, &RefusedError{Reason: arf.ReasonNoAccount, Detail: oneLine("the original message's From, Sender and Return-Path (" + shown + ") name no local account")}
	}
	source := "arf"
	if ua := oneLine(r.Fields.Get("User-Agent")); ua != "" {
		source = cutUTF8([]byte("arf:"+ua), 128)
	}
	return &events.Verdict{
		ID: r.ID(), Time: r.Time(now), Direction: rules.Complaint, Account: account,
		Verdict: rules.Verdict(verdict), Source: source, Message: Sample(r.Original),
	}, nil
}
