package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/internal/arf"
	"github.com/aupd/aupd/internal/client"
	"github.com/aupd/aupd/rules"
)

// Exit codes of ingest-arf, from sysexits.h, as a Postfix pipe(8)
// transport reads them: 75 makes Postfix keep the report queued and retry
// later, 65 bounces it with aupctl's message. Feedback reports usually
// have a null sender, so a bounce reaches nobody: only a report that can
// never be counted is permanent. Everything the provider can fix (token,
// token file, command line, --server, aupd down or failing) is 75, and
// the report waits in Postfix's queue until it is fixed.
const (
	exDataErr  = 65 // the report was refused (not ARF, no local account, ...)
	exTempFail = 75 // anything else: retry
)

// exitCodeError ends aupctl with a given exit code.
type exitCodeError struct {
	code int
	msg  string
}

func (e *exitCodeError) Error() string { return e.msg }

func addIngestCommands(commands map[string]command) {
	commands["ingest-arf"] = command{group: "verdicts", args: "[--token-file FILE] < REPORT", setupExit: exTempFail,
		summary: "post one feedback-loop (ARF) report read from stdin",
		help: "Meant for a Postfix pipe transport (deploy/postfix/fbl.master.cf). Exits with sysexits codes: 0 accepted " +
			"(or a duplicate), 65 refused for good (not ARF, not a complaint, no local account: Postfix bounces it), " +
			"75 anything else (token refused or unreadable, bad command line, aupd unreachable, 404, 5xx, timeout: " +
			"Postfix keeps the report queued and retries). See docs/feedback-loops.md.",
		flags: noFlags, run: func(ctx context.Context, x *cli, _ []string, _ *flags) error { return ingestARFCmd(ctx, x, "") }}
	var req client.ReplayRequest
	var minSpam int
	var vol rules.VolumeLimit
	var volAction string
	commands["replay"] = command{group: "verdicts",
		args: "[--threshold N] [--rate R --min-spam M] [--volume-window W (--volume-messages N | --volume-recipients N) [--volume-action A]] " +
			"[--company ID] [--since 24h]",
		summary: "what a threshold, spam rate or volume limit would have done, beside what happened",
		help: "Replays the AUP rules over the stored verdicts of the period with the threshold and spam-rate rule given, " +
			"and shows each account that would have crossed (when, which rule, the count and the rate) beside what aupd " +
			"actually did. --threshold alone keeps each account's live spam-rate rule; --rate alone keeps each " +
			"account's live threshold; --rate 0 turns the spam-rate rule off. --volume-window with --volume-messages or " +
			"--volume-recipients tries a volume limit against the accounts' volume records instead (or as well): each " +
			"account's count over the window now and the highest within the period, from the buckets its live limits " +
			"keep, beside the live volume limits' suspensions and throttles. Acts on nothing.",
		flags: func(fs *flag.FlagSet) *flags {
			fs.IntVar(&req.Threshold, "threshold", 0, "the threshold to try (at least 1); absent: each account's live threshold (with --rate)")
			fs.Func("rate", "the spam rate to try, a fraction (0.05 for 5%; 0: the rule off); absent: each account's live spam-rate rule",
				func(v string) error {
					f, err := strconv.ParseFloat(v, 64)
					if err != nil {
						return errors.New("want a fraction such as 0.05 (5%)")
					}
					req.SpamRate = &rules.SpamRateSetting{Rate: f}
					return nil
				})
			fs.IntVar(&minSpam, "min-spam", 0, "with --rate above 0: the least spam count that may cross (at least 1)")
			fs.DurationVar(&vol.Window, "volume-window", 0, "a volume limit's window to try (whole buckets of a window of the live limits, up to it)")
			fs.IntVar(&vol.Messages, "volume-messages", 0, "with --volume-window: the most messages within it")
			fs.IntVar(&vol.Recipients, "volume-recipients", 0, "with --volume-window: the most recipients within it")
			fs.StringVar(&volAction, "volume-action", "", "with --volume-window: throttle or suspend (default suspend)")
			fs.StringVar(&req.Company, "company", "", "only this company's accounts")
			fs.DurationVar(&req.Since, "since", 24*time.Hour, "how far back to replay")
			return &flags{}
		}, run: func(ctx context.Context, x *cli, _ []string, _ *flags) error {
			if vol.Window != 0 || vol.Messages != 0 || vol.Recipients != 0 || volAction != "" {
				vol.Action = rules.VolumeAction(volAction)
				req.Volume = &vol
			}
			return replayCmd(ctx, x, req, minSpam)
		}}
}

// ingestARFCmd reads one feedback-loop report from standard input (as a
// Postfix pipe transport hands it over) and posts it to aupd.
func ingestARFCmd(ctx context.Context, x *cli, tokenFile string) error {
	if path := tokenFile; path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return &exitCodeError{exTempFail, fmt.Sprintf("token file (the report stays queued): %v", err)}
		}
		c, err := client.New(x.server, strings.TrimSpace(string(b)), nil)
		if err != nil {
			return &exitCodeError{exTempFail, err.Error() + " (the report stays queued)"}
		}
		x.c = c
	}
	// At most arf.MaxReport bytes are sent: aupd counts a longer report
	// from what its first bytes carry. The rest is read and dropped, so
	// that Postfix sees the whole message taken.
	report, err := io.ReadAll(io.LimitReader(x.stdin, arf.MaxReport))
	if err == nil {
		_, err = io.Copy(io.Discard, x.stdin)
	}
	if err != nil {
		return &exitCodeError{exTempFail, fmt.Sprintf("read the report: %v", err)}
	}
	a, raw, err := x.c.IngestARF(ctx, report)
	if x.json && raw != nil {
		fmt.Fprintln(x.stdout, strings.TrimSpace(string(raw)))
	}
	if err != nil {
		// Only aupd's refusal of the report itself is permanent; a 404
		// (a wrong --server path), 401/403 (a rotated token) and the rest
		// are cured on this side.
		if a != nil && client.StatusOf(err) == 422 && len(a.Results) > 0 {
			r := a.Results[0]
			return &exitCodeError{exDataErr, fmt.Sprintf("refused (%s): %s", r.Reason, r.Detail)}
		}
		return &exitCodeError{exTempFail, fmt.Sprintf("not stored, the report stays queued: %v", err)}
	}
	if !x.json {
		for _, r := range a.Results {
			fmt.Fprintf(x.stdout, "%s complaint against %s (id %s)\n", r.Result, r.Account, r.ID)
		}
	}
	return nil
}

// replayCmd prints what a threshold, a spam rate or a volume limit
// would have done beside what happened.
func replayCmd(ctx context.Context, x *cli, req client.ReplayRequest, minSpam int) error {
	switch {
	case minSpam != 0 && req.SpamRate == nil:
		return &usageError{"--min-spam goes with --rate"}
	case req.Volume != nil && req.Volume.Window == 0:
		return &usageError{"--volume-messages, --volume-recipients and --volume-action go with --volume-window"}
	case req.Threshold < 0 || req.Threshold == 0 && req.SpamRate == nil && req.Volume == nil:
		return &usageError{"--threshold N (at least 1), --rate R --min-spam M, or --volume-window W with --volume-messages N or --volume-recipients N is required"}
	case req.Since <= 0:
		return &usageError{"--since wants a positive duration such as 24h (a week: 168h)"}
	}
	if req.SpamRate != nil {
		req.SpamRate.MinSpam = minSpam
	}
	rep, raw, err := x.c.Replay(ctx, req)
	if err != nil {
		return err
	}
	if x.json {
		fmt.Fprintln(x.stdout, strings.TrimSpace(string(raw)))
		return nil
	}
	if rep.Volume != nil {
		if err := volumeTable(x.stdout, rep.Volume); err != nil {
			return err
		}
		if req.Threshold == 0 && req.SpamRate == nil {
			return nil
		}
		fmt.Fprintln(x.stdout)
	}
	fmt.Fprintf(x.stdout, "%s over %s .. %s (window %s, %d stored events read)\n", tried(rep),
		rep.From.Format(time.RFC3339), rep.To.Format(time.RFC3339), rep.Window, rep.Events)
	if len(rep.Accounts) == 0 {
		fmt.Fprintln(x.stdout, "no account would have been suspended, and none was")
		return nil
	}
	tw := tabwriter.NewWriter(x.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tCOMPANY\tWOULD\tACTUALLY")
	for _, a := range rep.Accounts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Account, dash(a.Company), crossingsText(a.Would), crossingsText(a.Actual))
	}
	return tw.Flush()
}

// volumeTable prints the replay of a volume limit: what was tried and
// where the answer comes from, then each account listed.
func volumeTable(w io.Writer, v *apitypes.ReplayVolume) error {
	l := v.Limit
	what, n := "recipients", l.Recipients
	if l.Messages > 0 {
		what, n = "messages", l.Messages
	}
	fmt.Fprintf(w, "volume limit: more than %d %s within %s (%s), over %s .. %s\n", n, what, l.Window, l.Action,
		v.From.Format(time.RFC3339), v.To.Format(time.RFC3339))
	for _, s := range v.Sources {
		who := "the provider's limits"
		if s.Company != "" {
			who = "company " + s.Company + "'s limits"
		}
		if s.Answer != nil {
			fmt.Fprintf(w, "  %s: counted in buckets of %s (their %s ring); a count covers the window, less one bucket at most\n",
				who, s.Answer.Bucket, s.Answer.Window)
			continue
		}
		var rings []string
		for _, r := range s.Rings {
			rings = append(rings, fmt.Sprintf("buckets of %s over %s", r.Bucket, r.Window))
		}
		if len(rings) == 0 {
			fmt.Fprintf(w, "  %s: cannot answer this window (they count no %s)\n", who, what)
			continue
		}
		fmt.Fprintf(w, "  %s: cannot answer this window (%s in %s)\n", who, what, strings.Join(rings, ", "))
	}
	fmt.Fprintf(w, "%d volume records read, %d answer the window; accounts over the limit: %d within the period, %d now\n",
		v.Records, v.Answered, v.Over, v.OverNow)
	if len(v.Accounts) == 0 {
		fmt.Fprintln(w, "no account went over it, and no live volume limit crossed or throttles")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tCOMPANY\tNOW\tHIGHEST\tWOULD\tACTUALLY")
	for _, a := range v.Accounts {
		now, highest, would := recordText(a.Record), "-", "-"
		if a.Record == apitypes.RecordAnswered {
			now = strconv.Itoa(a.Count)
			if a.OverNow {
				now += " (over)"
			}
			if a.Peak > 0 {
				highest = fmt.Sprintf("%d in %s", a.Peak, span(a.PeakFrom, a.PeakTo))
			} else {
				highest = "0"
			}
		}
		if a.Would != nil {
			would = fmt.Sprintf("%s in %s", a.Would.Action, span(a.Would.From, a.Would.To))
		}
		actual := []string{}
		if c := crossingsText(a.Actual); c != "-" {
			actual = append(actual, c)
		}
		if th := a.Throttle; th != nil {
			actual = append(actual, fmt.Sprintf("throttled until %s, volume:%s", th.Until.UTC().Format(time.RFC3339), th.Limit))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Account, dash(a.Company), now, highest, would, dash(strings.Join(actual, "; ")))
	}
	return tw.Flush()
}

// recordText says why an account's record gives no figures.
func recordText(r string) string {
	switch r {
	case apitypes.RecordNone:
		return "no record"
	case apitypes.RecordOtherLimits:
		return "other limits"
	case apitypes.RecordNoRing:
		return "cannot answer"
	}
	return r
}

// span is a bucket or window: its start, and its end's time of day when
// it ends on the same day.
func span(from, to time.Time) string {
	from, to = from.UTC(), to.UTC()
	end := to.Format(time.RFC3339)
	if to.Format(time.DateOnly) == from.Format(time.DateOnly) {
		end = to.Format("15:04:05Z")
	}
	return from.Format(time.RFC3339) + ".." + end
}

// tried says what a replay tried.
func tried(rep *apitypes.ReplayReport) string {
	threshold := "each account's live threshold"
	if rep.Threshold > 0 {
		threshold = fmt.Sprintf("threshold %d", rep.Threshold)
	}
	switch r := rep.SpamRate; {
	case r == nil:
		return threshold + " and each account's live spam-rate rule"
	case r.Rate == 0:
		return threshold + ", spam-rate rule off,"
	default:
		return fmt.Sprintf("%s, spam rate over %s with at least %d spam,", threshold, percent(r.Rate), r.MinSpam)
	}
}

// crossingsText is crossings in a table cell: the action, when, the rule
// and its figures, for each; "-" for none.
func crossingsText(cs []apitypes.ReplayCrossing) string {
	var out []string
	for _, c := range cs {
		at := c.At.UTC().Format(time.RFC3339)
		rate := ""
		if r := c.Rate; r != nil {
			rate = fmt.Sprintf("spam %d of %d, %s > %s", r.Spam, r.Spam+r.Ham, percent(float64(r.Spam)/float64(r.Spam+r.Ham)), percent(r.Limit))
		}
		switch {
		case c.Volume != nil:
			out = append(out, fmt.Sprintf("%s at %s, %s: %s %d > %d", c.Action, at, c.Rule, c.Volume.Kind, c.Count, c.Threshold))
		case c.Rule == rules.RuleSpamRate && rate != "":
			out = append(out, fmt.Sprintf("%s at %s, %s: %s (count %d)", c.Action, at, c.Rule, rate, c.Count))
		case rate != "":
			out = append(out, fmt.Sprintf("%s at %s, %s: count %d > %d (%s)", c.Action, at, c.Rule, c.Count, c.Threshold, rate))
		default:
			out = append(out, fmt.Sprintf("%s at %s, %s: count %d > %d", c.Action, at, c.Rule, c.Count, c.Threshold))
		}
	}
	return dash(strings.Join(out, "; "))
}

// percent is a fraction as a percentage, to three figures: 0.05 is 5%.
func percent(f float64) string {
	return strconv.FormatFloat(f*100, 'g', 3, 64) + "%"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// exitCodeOf returns the exit code an error asks for.
func exitCodeOf(err error) (int, bool) {
	var e *exitCodeError
	if errors.As(err, &e) {
		return e.code, true
	}
	return 0, false
}
