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
	commands["replay"] = command{group: "verdicts", args: "[--threshold N] [--rate R --min-spam M] [--company ID] [--since 24h]",
		summary: "what a threshold or spam rate would have suspended, beside what happened",
		help: "Replays the AUP rules over the stored verdicts of the period with the threshold and spam-rate rule given, " +
			"and shows each account that would have crossed (when, which rule, the count and the rate) beside what aupd " +
			"actually did. --threshold alone keeps each account's live spam-rate rule; --rate alone keeps each " +
			"account's live threshold; --rate 0 turns the spam-rate rule off. Acts on nothing.",
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
			fs.StringVar(&req.Company, "company", "", "only this company's accounts")
			fs.DurationVar(&req.Since, "since", 24*time.Hour, "how far back to replay")
			return &flags{}
		}, run: func(ctx context.Context, x *cli, _ []string, _ *flags) error {
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

// replayCmd prints what a threshold or a spam rate would have done
// beside what happened.
func replayCmd(ctx context.Context, x *cli, req client.ReplayRequest, minSpam int) error {
	switch {
	case minSpam != 0 && req.SpamRate == nil:
		return &usageError{"--min-spam goes with --rate"}
	case req.Threshold < 0 || req.Threshold == 0 && req.SpamRate == nil:
		return &usageError{"--threshold N (at least 1) or --rate R --min-spam M is required"}
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
