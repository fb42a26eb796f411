package store

import (
	"context"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

//go:embed ingest.lua
var ingestLua string

var ingestScript = redis.NewScript(ingestLua)

// Outcome is what became of one event in the window.
type Outcome byte

// The outcomes of Ingest, one per event.
const (
	Counted   Outcome = 'c' // counted toward the threshold
	StatsOnly Outcome = 's' // kept for statistics only (ham, a kind that does not count)
	Duplicate Outcome = 'd' // this id was already recorded
	Late      Outcome = 'l' // outside the window, or before the last reinstatement
	AtCap     Outcome = 'k' // counted while the count is at the per-account cap
)

func (o Outcome) String() string {
	switch o {
	case Counted:
		return "counted"
	case StatsOnly:
		return "stats"
	case Duplicate:
		return "duplicate"
	case Late:
		return "late"
	case AtCap:
		return "capped"
	}
	return "unknown"
}

// Item is one event to ingest.
type Item struct {
	ID       string // the event id (hashed; the same id never counts twice)
	Time     time.Time
	Kind     rules.Kind
	Counting bool // whether the policy counts it toward the threshold
	// Fingerprint of the message content and stream sequence of the event,
	// offered as an evidence sample. Seq 0: no sample.
	Fingerprint string
	Seq         uint64
}

// Batch is the events of one account in one batch.
type Batch struct {
	Account   string
	Company   string
	Threshold int
	Cap       int          // at most this many events kept per set; > Threshold
	Action    rules.Action // on crossing: suspend or report
	Items     []Item
}

// Result is the outcome of one account's batch.
type Result struct {
	Outcomes []Outcome // one per item
	Count    int       // counting events in the window (at most Cap)
	Capped   bool      // Count reached Cap: the real count is at least Count
	Created  bool      // the account was first seen now
	Outbox   int       // account events waiting to be published
	Crossing rules.Action
	ID       string // id of the suspension or report the crossing made
	Err      error  // the batch failed (transient); nothing is known
}

// Ingest applies every account's batch in one pipelined round trip: one
// script call per account, each atomic. newID makes the id of a
// suspension or report should one happen. Results are in the order of
// batches; a failed call sets that result's Err.
func (s *Store) Ingest(ctx context.Context, batches []Batch, window time.Duration, now time.Time, newID func() string) ([]Result, error) {
	results := make([]Result, len(batches))
	if len(batches) == 0 {
		return results, nil
	}
	nowMS := ms(now)
	nowStr, startStr := fmtTime(now), fmtTime(now.Add(-window))
	keys := make([][]string, len(batches))
	args := make([][]any, len(batches))
	var idbuf [8]byte
	for i, b := range batches {
		a := make([]any, 0, 11+4*len(b.Items))
		a = append(a, nowMS, window.Milliseconds(), b.Threshold, b.Cap, string(b.Action), newID(), b.Company, nowStr, startStr, b.Account, len(b.Items))
		for _, it := range b.Items {
			binary.BigEndian.PutUint64(idbuf[:], idHash(it.ID))
			counting := "0"
			if it.Counting {
				counting = "1"
			}
			ref := ""
			if it.Seq != 0 {
				ref = it.Fingerprint + "|" + strconv.FormatUint(it.Seq, 10)
			}
			a = append(a, string(idbuf[:]), ms(it.Time)*16+int64(it.Kind), counting, ref)
		}
		args[i] = a
		keys[i] = []string{s.key(b.Account, sufState), s.key(b.Account, sufWindow), s.key(b.Account, sufOther), s.key(b.Account, sufHistory), s.key(b.Account, sufOutbox)}
	}
	cmds, err := s.evalAll(ctx, ingestScript, keys, args)
	if err != nil {
		return nil, err
	}
	for i, c := range cmds {
		results[i] = parseIngest(c, len(batches[i].Items))
	}
	return results, nil
}

func parseIngest(c *redis.Cmd, n int) Result {
	vals, err := c.Slice()
	if err != nil {
		return Result{Err: err}
	}
	if len(vals) != 7 {
		return Result{Err: fmt.Errorf("ingest script returned %d values", len(vals))}
	}
	outs, _ := vals[0].(string)
	if len(outs) != n {
		return Result{Err: fmt.Errorf("ingest script returned %d outcomes for %d events", len(outs), n)}
	}
	r := Result{Outcomes: make([]Outcome, n)}
	for i := range n {
		r.Outcomes[i] = Outcome(outs[i])
	}
	r.Count = int(toInt(vals[1]))
	r.Capped = toInt(vals[2]) == 1
	r.Created = toInt(vals[3]) == 1
	r.Outbox = int(toInt(vals[4]))
	cr, _ := vals[5].(string)
	r.Crossing = rules.Action(cr)
	r.ID, _ = vals[6].(string)
	return r
}

func toInt(v any) int64 {
	n, _ := v.(int64)
	return n
}

// decodeAUP decodes the last_aup field of an account's state.
func decodeAUP(s string) *events.AUPSuspension {
	if s == "" {
		return nil
	}
	var a events.AUPSuspension
	if json.Unmarshal([]byte(s), &a) != nil {
		return nil
	}
	return &a
}
