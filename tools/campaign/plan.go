package campaign

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
	"github.com/aupd/aupd/tools/loadtest"
)

// Plan is the campaign's load, a pure function of its parameters and seed:
// which accounts get how many counting events (so that a share of them
// cross the threshold and the rest stay at or under it), and the order of
// originals, duplicates and invalid events to publish.
type Plan struct {
	Seed      uint64
	Start     time.Time // every event's time is in the two hours before it
	Threshold int       // aup.threshold: crossers count more, the others at most this
	MaxCount  int       // the largest count of an account (max_tracked must exceed it)
	Accounts  []string
	Expected  []int  // distinct counting ids per account
	Crosses   []bool // Expected > Threshold
	NOrig     int    // originals (distinct ids), counting or not
	NDup      int    // exact copies of an earlier original (same event id)
	NInvalid  int    // invalid events, each dead-lettered once
	orig      []uint32
	seq       []byte // 'o' original, 'd' duplicate, 'x' invalid
}

const hamBit = 1 << 31

// Shares of the load by default.
const (
	DefaultDupShare     = 0.05
	DefaultInvalidShare = 0.01
	DefaultCrossShare   = 0.4
	hamShare            = 0.15 // of originals: statistics only, never counted
)

// NewPlan plans n events over m accounts.
func NewPlan(n, m int, seed uint64, dupShare, invalidShare, crossShare float64, start time.Time) (*Plan, error) {
	if n < 10*m || m < 2 {
		return nil, fmt.Errorf("plan: %d events over %d accounts: need at least 2 accounts and 10 events per account", n, m)
	}
	if dupShare < 0 || invalidShare < 0 || dupShare+invalidShare > 0.5 || crossShare <= 0 || crossShare >= 1 {
		return nil, errors.New("plan: shares out of range (duplicates + invalid at most 0.5, crossers strictly between 0 and 1)")
	}
	r := rand.New(rand.NewPCG(seed, 0x63616d70))
	p := &Plan{Seed: seed, Start: start.UTC().Truncate(time.Millisecond)}
	p.NInvalid = int(math.Round(float64(n) * invalidShare))
	p.NDup = int(math.Round(float64(n) * dupShare))
	p.NOrig = n - p.NInvalid - p.NDup
	// Counting events per account: crossers uniform in T+1..1.6T, the
	// others in 0.4T..T; their mean is (0.7 + 0.6*cross) T.
	counting := float64(p.NOrig) * (1 - hamShare) / float64(m)
	p.Threshold = max(2, int(math.Round(counting/(0.7+0.6*crossShare))))
	T := p.Threshold
	ham := make([]int, m)
	sum := 0
	for a := range m {
		dom := "example.com"
		if a%2 == 1 {
			dom = "globex.test"
		}
		p.Accounts = append(p.Accounts, fmt.Sprintf("user%06d@%s", a, dom))
		var c int
		switch cross := r.Float64() < crossShare; {
		case a == 0: // the edges: exactly at the threshold, and one over it
			c = T
		case a == 1:
			c = T + 1
		case cross:
			c = T + 1 + r.IntN(max(1, T*6/10))
		default:
			c = T*4/10 + r.IntN(T-T*4/10+1)
		}
		p.Expected = append(p.Expected, c)
		p.Crosses = append(p.Crosses, c > T)
		p.MaxCount = max(p.MaxCount, c)
		ham[a] = int(float64(c) * hamShare / (1 - hamShare) * (0.5 + r.Float64()))
		sum += c + ham[a]
	}
	// Ham takes up the difference, so that the total is exact.
	for a := 0; sum != p.NOrig; a = (a + 1) % m {
		if sum < p.NOrig {
			ham[a]++
			sum++
		} else if ham[a] > 0 {
			ham[a]--
			sum--
		} else if a == m-1 && allZero(ham) {
			p.NOrig = sum // cannot shrink further: fewer events than asked
		}
	}
	p.orig = make([]uint32, 0, p.NOrig)
	for a := range m {
		for range p.Expected[a] {
			p.orig = append(p.orig, uint32(a))
		}
		for range ham[a] {
			p.orig = append(p.orig, uint32(a)|hamBit)
		}
	}
	r.Shuffle(len(p.orig), func(i, j int) { p.orig[i], p.orig[j] = p.orig[j], p.orig[i] })
	p.seq = make([]byte, 0, p.NOrig+p.NDup+p.NInvalid)
	for range p.NOrig {
		p.seq = append(p.seq, 'o')
	}
	for range p.NDup {
		p.seq = append(p.seq, 'd')
	}
	for range p.NInvalid {
		p.seq = append(p.seq, 'x')
	}
	r.Shuffle(len(p.seq), func(i, j int) { p.seq[i], p.seq[j] = p.seq[j], p.seq[i] })
	for i, k := range p.seq { // a duplicate needs an original before it
		if k == 'o' {
			p.seq[0], p.seq[i] = p.seq[i], p.seq[0]
			break
		}
	}
	return p, nil
}

func allZero(xs []int) bool {
	for _, x := range xs {
		if x != 0 {
			return false
		}
	}
	return true
}

// Len is the number of events to publish.
func (p *Plan) Len() int { return len(p.seq) }

// Crossings is how many accounts cross the threshold.
func (p *Plan) Crossings() int {
	n := 0
	for _, c := range p.Crosses {
		if c {
			n++
		}
	}
	return n
}

// Original is original k (0 <= k < NOrig): the same event every time it
// is asked for, so that a duplicate is an exact copy.
func (p *Plan) Original(k int) loadtest.Event {
	r := rand.New(rand.NewPCG(p.Seed^0x6f726967, uint64(k)))
	a := p.orig[k]
	e := loadtest.Event{Account: p.Accounts[a&^hamBit], Local: true}
	switch d := r.IntN(100); {
	case d < 60:
		e.Direction = rules.Outbound
	case d < 85:
		e.Direction = rules.Inbound
	default:
		e.Direction = rules.Complaint
	}
	if a&hamBit != 0 {
		e.Verdict = rules.Ham
	} else {
		e.Verdict = []rules.Verdict{rules.Spam, rules.Spam, rules.Spam, rules.Phish, rules.Virus}[r.IntN(5)]
	}
	e.ID = fmt.Sprintf("c%x-%08d-%08x", p.Seed, k, r.Uint32())
	e.Time = p.Start.Add(-time.Duration(1 + r.Int64N(int64(2*time.Hour))))
	e.Subject = events.SubjectPrefix + string(e.Direction)
	e.Data = loadtest.Payload(r, e)
	return e
}

// Invalid is invalid event i: each is dead-lettered with its own reason,
// and none may count, though most name a real account.
func (p *Plan) Invalid(i int) (subject string, data []byte, reason string) {
	acct := p.Accounts[i%len(p.Accounts)]
	id := fmt.Sprintf("bad%x-%07d", p.Seed, i)
	t := p.Start.Add(-time.Minute).Format(time.RFC3339Nano)
	subject = events.SubjectPrefix + "outbound"
	ev := func(fields string) []byte { return []byte("{" + fields + "}") }
	switch i % 7 {
	case 0:
		return subject, []byte(fmt.Sprintf(`{"id":%q,"time":%q,"direction":"outbound","account":`, id, t)), events.ReasonInvalidJSON
	case 1:
		return subject, ev(fmt.Sprintf(`"id":%q,"time":%q,"direction":"outbound","verdict":"spam"`, id, t)), events.ReasonMissingField
	case 2:
		return subject, ev(fmt.Sprintf(`"id":%q,"time":%q,"direction":"inbound","account":%q,"verdict":"spam"`, id, t, acct)), events.ReasonDirectionClash
	case 3:
		return subject, ev(fmt.Sprintf(`"id":%q,"time":%q,"direction":"outbound","account":"not an address","verdict":"spam"`, id, t)), events.ReasonInvalidField
	case 4:
		future := time.Now().Add(6 * time.Hour).UTC().Format(time.RFC3339Nano)
		return subject, ev(fmt.Sprintf(`"id":%q,"time":%q,"direction":"outbound","account":%q,"verdict":"spam"`, id, future, acct)), events.ReasonTimeInFuture
	case 5:
		return subject, ev(fmt.Sprintf(`"id":%q,"time":%q,"direction":"outbound","account":%q,"verdict":"maybe"`, id, t, acct)), events.ReasonInvalidField
	default:
		return subject, []byte(`["not","an","object"]`), events.ReasonUnsupportedType
	}
}

// OriginalOf returns the index of the original whose event id is id.
func (p *Plan) OriginalOf(id string) (int, bool) {
	var seed uint64
	var k int
	var tail uint32
	if n, err := fmt.Sscanf(id, "c%x-%08d-%08x", &seed, &k, &tail); err != nil || n != 3 || seed != p.Seed || k < 0 || k >= p.NOrig {
		return 0, false
	}
	return k, p.Original(k).ID == id
}

// Counts reports whether original k is a counting event of account.
func (p *Plan) Counts(k int, account string) bool {
	a := p.orig[k]
	return a&hamBit == 0 && p.Accounts[a] == account
}
