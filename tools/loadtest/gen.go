package loadtest

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// Event is one generated verdict event: its subject and payload, and what
// the payload says, so that the Redis-only phase can skip decoding.
type Event struct {
	Subject   string
	Data      []byte
	ID        string
	Account   string
	Direction rules.Direction
	Verdict   rules.Verdict
	Time      time.Time
	Local     bool // the account is in a company's domains
}

// Local domains of the load (the companies the run configures) and the
// domain of external recipients.
const (
	domainA  = "example.com"
	domainB  = "globex.test"
	external = "elsewhere.org"
)

// Generate makes n events for m accounts, deterministic for a seed:
//   - 0.5% of the accounts ("heavy") get 10% of the events, so that a few
//     cross the default threshold of 50 and are suspended; the others get
//     n*0.9/m each on average (18 for the defaults);
//   - directions 60% outbound, 25% inbound, 15% complaint; 5% of inbound
//     are for an address in no company (statistics only);
//   - verdicts 55% spam, 8% phish, 2% virus, 35% ham (ham never counts);
//   - 2% are exact copies of an earlier event (redeliveries by a publisher,
//     no Nats-Msg-Id), which aupd must count once;
//   - times within the last two hours; payloads of about 400 to 500 bytes.
//
// idTag makes the ids of one call distinct from another's.
func Generate(n, m int, seed uint64, idTag string, now time.Time) []Event {
	r := rand.New(rand.NewPCG(seed, 0x61757064))
	heavy := max(1, m/200)
	out := make([]Event, 0, n)
	for i := range n {
		if i > 10 && r.IntN(100) < 2 {
			out = append(out, out[r.IntN(len(out))])
			continue
		}
		var a int
		if r.IntN(10) == 0 {
			a = r.IntN(heavy)
		} else {
			a = heavy + r.IntN(max(1, m-heavy))
		}
		dom := domainA
		if a%2 == 1 {
			dom = domainB
		}
		e := Event{Account: fmt.Sprintf("user%06d@%s", a, dom), Local: true}
		switch d := r.IntN(100); {
		case d < 60:
			e.Direction = rules.Outbound
		case d < 85:
			e.Direction = rules.Inbound
			if r.IntN(100) < 5 {
				e.Account, e.Local = fmt.Sprintf("someone%d@%s", r.IntN(1000), external), false
			}
		default:
			e.Direction = rules.Complaint
		}
		switch v := r.IntN(100); {
		case v < 55:
			e.Verdict = rules.Spam
		case v < 63:
			e.Verdict = rules.Phish
		case v < 65:
			e.Verdict = rules.Virus
		default:
			e.Verdict = rules.Ham
		}
		e.ID = fmt.Sprintf("%s-%08d-%016x", idTag, i, r.Uint64())
		e.Time = now.Add(-time.Duration(r.Int64N(int64(2 * time.Hour)))).UTC()
		e.Subject = events.SubjectPrefix + string(e.Direction)
		e.Data = payload(r, e)
		out = append(out, e)
	}
	return out
}

var subjects = []string{"Your invoice is ready", "Re: meeting tomorrow", "WIN a FREE cruise today!!!", "Password expiry notice", "Quarterly report", "Cheap meds, no prescription"}

func payload(r *rand.Rand, e Event) []byte {
	subj := subjects[r.IntN(len(subjects))]
	raw := fmt.Sprintf("From: %s\r\nSubject: %s\r\n\r\nHello, see https://example.net/%x\r\n", e.Account, subj, r.Uint64())
	return fmt.Appendf(nil, `{"id":%q,"time":%q,"direction":%q,"account":%q,"verdict":%q,"score":%.1f,"source":"rspamd",`+
		`"message":{"message_id":"<%x@mx.example.com>","subject":%q,"from":%q,"to":["x@example.net"],"raw":%q}}`,
		e.ID, e.Time.Format(time.RFC3339Nano), e.Direction, e.Account, e.Verdict, 5+r.Float64()*10,
		r.Uint64(), subj, e.Account, raw)
}

// Payload is the JSON of e as Generate writes it: e's id, time, direction,
// account and verdict, with a score, a source and a message drawn from r.
func Payload(r *rand.Rand, e Event) []byte { return payload(r, e) }
