package campaign

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/consumers"
	"github.com/aupd/aupd/internal/cluster"
	"github.com/aupd/aupd/internal/events"
)

// maxListed is how many differing accounts a failed check lists.
const maxListed = 8

// check reads what aupd did (every window, the account stream, the dead
// letters, the sink's notices) and fills the table.
func (r *runner) check(ctx context.Context, res *Result) error {
	p := r.plan
	accounts := p.Accounts
	got, err := r.windowMembers(ctx, accounts)
	if err != nil {
		return err
	}
	acctEvents, err := r.readStream(ctx, r.streams[1])
	if err != nil {
		return err
	}
	dead, err := r.readStream(ctx, r.streams[2])
	if err != nil {
		return err
	}
	notices := r.c.SMTP.Notices()

	ok := func(b bool) *bool { return &b }
	add := func(check, exp, obs string, pass *bool, fail []string) {
		res.Rows = append(res.Rows, Row{check, exp, obs, pass})
		if pass != nil && !*pass {
			res.Failures = append(res.Failures, check+": "+obs)
			for i, f := range fail {
				if i == maxListed {
					res.Failures = append(res.Failures, fmt.Sprintf("  ... and %d more", len(fail)-maxListed))
					break
				}
				res.Failures = append(res.Failures, "  "+f)
			}
		}
	}
	info := func(check, exp, obs string) { add(check, exp, obs, nil, nil) }

	info("events published (acked by JetStream)", fmt.Sprint(p.Len()),
		fmt.Sprintf("%d originals, %d duplicates (same event id), %d invalid; %d publishes retried", p.NOrig, p.NDup, p.NInvalid, res.Retries))

	// Windows, member by member, against the counting ids published.
	want, other := p.expectedMembers()
	counting := 0
	var lost, extra int
	var lostAccts, extraAccts []string
	for i, a := range accounts {
		counting += len(want[i])
		d := diffWindow(a, want[i], got[i], other[i])
		if d == nil {
			continue
		}
		if len(d.Missing) > 0 {
			lost += len(d.Missing)
			lostAccts = append(lostAccts, d.lost())
		}
		if len(d.Extra) > 0 {
			extra += len(d.Extra)
			extraAccts = append(extraAccts, d.extra())
		}
	}
	info("counting events (distinct ids, all accounts)", fmt.Sprint(counting), fmt.Sprintf("%d accounts, threshold %d", len(accounts), p.Threshold))
	add("events lost", "0", fmt.Sprintf("%d (in %d accounts)", lost, len(lostAccts)), ok(lost == 0), lostAccts)
	add("events counted twice or wrongly", "0", fmt.Sprintf("%d (in %d accounts)", extra, len(extraAccts)), ok(extra == 0), extraAccts)

	// Dead letters: one per invalid event, with its reason.
	wantReasons := map[string]int{}
	for i := range p.NInvalid {
		_, _, reason := p.Invalid(i)
		wantReasons[reason]++
	}
	gotReasons := map[string]int{}
	seqs := map[string]int{}
	for _, m := range dead {
		gotReasons[m.Headers().Get(consumers.HeaderReason)]++
		seqs[m.Headers().Get(consumers.HeaderSeq)]++
	}
	var deadDiff []string
	for _, reason := range slices.Sorted(maps.Keys(merge(wantReasons, gotReasons))) {
		if wantReasons[reason] != gotReasons[reason] {
			deadDiff = append(deadDiff, fmt.Sprintf("reason %s: %d dead letters, %d such invalid events published", reason, gotReasons[reason], wantReasons[reason]))
		}
	}
	for seq, n := range seqs {
		if n > 1 {
			deadDiff = append(deadDiff, fmt.Sprintf("stream sequence %s dead-lettered %d times", seq, n))
		}
	}
	add("events dead-lettered", fmt.Sprintf("%d (the invalid events)", p.NInvalid),
		fmt.Sprintf("%d (%d distinct events; %s)", len(dead), len(seqs), reasonList(gotReasons)),
		ok(len(dead) == p.NInvalid && len(seqs) == p.NInvalid && len(deadDiff) == 0), deadDiff)

	// Suspension events: exactly one per crossing, none otherwise.
	type susp struct {
		id    string
		count int
	}
	suspensions := map[string][]susp{}
	others := map[string]int{}
	bySuspension := map[string]string{} // suspension id -> account
	for _, m := range acctEvents {
		var ev events.AccountEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			others["unreadable"]++
			continue
		}
		if ev.Type != "suspended" || ev.Suspension == nil {
			others[ev.Type]++
			continue
		}
		suspensions[ev.Account] = append(suspensions[ev.Account], susp{ev.Suspension.ID, ev.Suspension.Count})
		bySuspension[ev.Suspension.ID] = ev.Account
	}
	crossing := map[string]bool{}
	for i, a := range p.Accounts {
		crossing[a] = p.Crosses[i]
	}
	var one, none, several, unexpected int
	var suspDiff []string
	known := map[string]bool{}
	for i, a := range accounts {
		known[a] = true
		n := len(suspensions[a])
		switch {
		case crossing[a] && n == 1:
			one++
		case crossing[a] && n == 0:
			none++
			suspDiff = append(suspDiff, a+": crossed, no suspension event")
		case crossing[a]:
			several++
			suspDiff = append(suspDiff, fmt.Sprintf("%s: %d suspension events %v", a, n, suspensions[a]))
		case n > 0:
			unexpected += n
			suspDiff = append(suspDiff, fmt.Sprintf("%s: did not cross (%d counting ids), %d suspension events", a, p.Expected[i], n))
		}
	}
	for a := range suspensions {
		if !known[a] {
			unexpected += len(suspensions[a])
			suspDiff = append(suspDiff, a+": not an account of the campaign, suspended")
		}
	}
	crossings := p.Crossings()
	add("suspension events per crossing", fmt.Sprintf("1 for each of %d crossings, 0 for the %d others", crossings, len(accounts)-crossings),
		fmt.Sprintf("1: %d, none: %d, more than 1: %d; for accounts that did not cross: %d", one, none, several, unexpected),
		ok(one == crossings && none == 0 && several == 0 && unexpected == 0), suspDiff)
	var otherList []string
	for _, t := range slices.Sorted(maps.Keys(others)) {
		otherList = append(otherList, fmt.Sprintf("%s: %d", t, others[t]))
	}
	add("other account events", "0", fmt.Sprint(len(otherList)), ok(len(others) == 0), otherList)

	// Notices: one per suspension; a re-send with the same Message-ID is
	// the documented SMTP window and is counted apart.
	type noticeKey struct{ account, suspension string }
	mids := map[noticeKey]map[string]int{}
	var unknown, badEvidence []string
	unparsed := 0
	for _, n := range notices {
		if n.ParseErr != "" {
			unparsed++
			unknown = append(unknown, fmt.Sprintf("notice %s: %s", n.MessageID, n.ParseErr))
			continue
		}
		if a, ok := bySuspension[n.Suspension]; !ok || a != n.Account {
			unknown = append(unknown, fmt.Sprintf("notice %s for %s names suspension %s, which no suspension event has", n.MessageID, n.Account, n.Suspension))
			continue
		}
		// Evidence: three samples, each a counting event of the account.
		if len(n.Samples) != 3 {
			badEvidence = append(badEvidence, fmt.Sprintf("notice %s for %s: %d samples in evidence.txt", n.MessageID, n.Account, len(n.Samples)))
		}
		for _, id := range n.Samples {
			if k, ok := p.OriginalOf(id); !ok || !p.Counts(k, n.Account) {
				badEvidence = append(badEvidence, fmt.Sprintf("notice %s for %s: sample %s is not a counting event of the account", n.MessageID, n.Account, id))
			}
		}
		k := noticeKey{n.Account, n.Suspension}
		if mids[k] == nil {
			mids[k] = map[string]int{}
		}
		mids[k][n.MessageID]++
	}
	var nOne, nNone, nSeveral, resends int
	var noticeDiff []string
	for _, a := range slices.Sorted(maps.Keys(suspensions)) {
		for _, s := range suspensions[a] {
			m := mids[noticeKey{a, s.id}]
			switch len(m) {
			case 0:
				nNone++
				noticeDiff = append(noticeDiff, fmt.Sprintf("%s: suspension %s has no notice", a, s.id))
			case 1:
				nOne++
			default:
				nSeveral++
				noticeDiff = append(noticeDiff, fmt.Sprintf("%s: suspension %s has notices with %d different Message-IDs", a, s.id, len(m)))
			}
			for _, c := range m {
				resends += c - 1
			}
		}
	}
	nSusp := 0
	for _, s := range suspensions {
		nSusp += len(s)
	}
	add("notices per suspension", fmt.Sprintf("1 for each of %d suspensions", nSusp),
		fmt.Sprintf("1: %d, none: %d, several Message-IDs: %d; %d messages at the sink", nOne, nNone, nSeveral, len(notices)),
		ok(nOne == nSusp && nNone == 0 && nSeveral == 0), noticeDiff)
	info("re-sent notices, same Message-ID (the SMTP window)", "counted apart", fmt.Sprint(resends))
	add("notices for no known suspension", "0", fmt.Sprint(len(unknown)), ok(len(unknown) == 0), unknown)
	add("notices whose evidence.txt is not 3 counted events of the account", "0", fmt.Sprint(len(badEvidence)), ok(len(badEvidence) == 0), badEvidence)

	// Not a check: how long one event waited, unacknowledged, while
	// later ones were acked (a redelivery held back).
	r.mu.Lock()
	st := r.stall
	r.mu.Unlock()
	obs := "none"
	if st.longest > 0 {
		obs = fmt.Sprintf("%s from %s at stream sequence %d%s", st.longest.Round(100*time.Millisecond), st.at.Round(100*time.Millisecond), st.floor+1, r.eventAt(ctx, st.floor+1))
	}
	if st.backwards > 0 {
		obs += fmt.Sprintf("; the ack floor moved back %d times", st.backwards)
	}
	info("longest ack-floor stall (verdict consumer)", "-", obs)

	res.Pass = len(res.Failures) == 0
	return nil
}

// eventAt names the event at a verdict stream sequence.
func (r *runner) eventAt(ctx context.Context, seq uint64) string {
	s, err := r.js.Stream(ctx, r.streams[0])
	if err != nil {
		return ""
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return ""
	}
	var ev struct{ ID, Account string }
	_ = json.Unmarshal(m.Data, &ev)
	return fmt.Sprintf(" (%s, id %q, account %q)", m.Subject, ev.ID, ev.Account)
}

func merge(a, b map[string]int) map[string]int {
	out := maps.Clone(a)
	for k, v := range b {
		out[k] += v
	}
	return out
}

func reasonList(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func retry(ctx context.Context, fn func() error) error {
	var err error
	for range 10 {
		if err = fn(); err == nil {
			return nil
		}
		if serr := cluster.Sleep(ctx, 500*time.Millisecond); serr != nil {
			return serr
		}
	}
	return err
}

// readStream reads every message of a stream with an ordered consumer.
func (r *runner) readStream(ctx context.Context, name string) ([]jetstream.Msg, error) {
	s, err := r.js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	total := info.State.Msgs
	var out []jetstream.Msg
	if total == 0 {
		return nil, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for uint64(len(out)) < total && time.Now().Before(deadline) {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			continue
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
	}
	if uint64(len(out)) < total {
		return nil, fmt.Errorf("read %d of %d messages of %s", len(out), total, name)
	}
	return out, nil
}

// printFaults writes one line per fault: when it started, what it hit,
// its stalls and how long until aupd caught up.
func (res *Result) printFaults(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	shards := make([]string, len(res.Shards))
	for i := range shards {
		shards[i] = fmt.Sprintf("s%d", i)
	}
	fmt.Fprintf(tw, "fault\tat\tkind\ttarget\tstall, no shard acked\tstall per shard (%s)\tcaught up\tdetail\n", strings.Join(shards, ", "))
	sort.SliceStable(res.Faults, func(i, j int) bool { return res.Faults[i].N < res.Faults[j].N })
	for _, f := range res.Faults {
		per := make([]string, len(f.Stall.Shards))
		for s, d := range f.Stall.Shards {
			per[s] = stallText(d, f.Stall.ShardsOn[s])
			if s == f.Shard {
				per[s] += "*"
			}
		}
		perShard := strings.Join(per, ", ")
		if len(per) > 0 {
			perShard += fmt.Sprintf(" (longest from +%s)", f.Stall.AnyFrom.Round(100*time.Millisecond))
		}
		caught := "not all acked"
		if f.CaughtUp.All {
			caught = f.CaughtUp.After.Round(time.Millisecond).String()
		}
		detail := f.Detail
		if f.Notice != "" {
			detail += "; " + f.Notice
		}
		switch {
		case f.UntilEnd && f.Past > 0:
			detail += fmt.Sprintf("; rejoined %s after publishing ended", f.Past.Round(100*time.Millisecond))
		case f.Past > 0:
			detail += fmt.Sprintf("; ENDED %s AFTER PUBLISHING", f.Past.Round(100*time.Millisecond))
		}
		if f.Err != nil {
			detail = "ERROR: " + f.Err.Error()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.N, f.Started.Round(100*time.Millisecond), f.Kind, f.What,
			stallText(f.Stall.Any, f.Stall.AnyOn), perShard, caught, detail)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nshards: %s; * the shard the fault hit\n", strings.Join(res.Shards, ", "))
	fmt.Fprintln(w, "stall: the longest time, from the fault's start until the next fault's (the last: until aupd drained), with counting events sent and not yet acknowledged and none of them acknowledged; per shard, of the events of that shard's accounts; + still under way when the next fault started")
	fmt.Fprintln(w, "caught up: from the fault's end until every counting event sent before it was acknowledged")
	fmt.Fprintf(w, "before the first fault the longest stall of any shard was %s", res.Baseline.Round(100*time.Millisecond))
	if res.FromFloor > 0 {
		fmt.Fprintf(w, "; %d acks were not seen and are timed by the consumer's ack floor (later than they were)", res.FromFloor)
	}
	fmt.Fprintln(w)
}

// stallText is a stall, rounded, with a + when it went on into the next
// fault's time.
func stallText(d time.Duration, on bool) string {
	t := d.Round(100 * time.Millisecond).String()
	if on {
		t += "+"
	}
	return t
}

// Print writes the table.
func (res *Result) Print(w io.Writer) {
	p := res.Plan
	fmt.Fprintf(w, "\nfault campaign, seed %d: %d events over %d accounts (threshold %d, %d cross); published in %s, drained after %s\n\n",
		p.Seed, p.Len(), len(p.Accounts), p.Threshold, p.Crossings(), res.Published.Round(time.Second), res.Drained.Round(time.Second))
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "check\texpected\tobserved\tresult")
	for _, row := range res.Rows {
		result := ""
		if row.OK != nil {
			result = "ok"
			if !*row.OK {
				result = "FAIL"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", row.Check, row.Expected, row.Observed, result)
	}
	tw.Flush()
	fmt.Fprintln(w)
	res.printFaults(w)
	if res.Pass {
		fmt.Fprintln(w, "\nPASS: nothing lost, nothing counted twice, every invalid event dead-lettered once, one suspension event per crossing, one notice per suspension")
		return
	}
	fmt.Fprintln(w, "\nFAIL:")
	for _, f := range res.Failures {
		fmt.Fprintln(w, "  "+f)
	}
}
