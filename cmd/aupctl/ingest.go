package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aupd/aupd/internal/arf"
	"github.com/aupd/aupd/internal/client"
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
	var threshold int
	var company string
	var since time.Duration
	commands["replay"] = command{group: "verdicts", args: "--threshold N [--company ID] [--since 24h]",
		summary: "what threshold N would have suspended, beside what happened",
		flags: func(fs *flag.FlagSet) *flags {
			fs.IntVar(&threshold, "threshold", 0, "the threshold to try (required)")
			fs.StringVar(&company, "company", "", "only this company's accounts")
			fs.DurationVar(&since, "since", 24*time.Hour, "how far back to replay")
			return &flags{}
		}, run: func(ctx context.Context, x *cli, _ []string, _ *flags) error {
			return replayCmd(ctx, x, threshold, company, since)
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

// replayCmd prints what a threshold would have done beside what happened.
func replayCmd(ctx context.Context, x *cli, threshold int, company string, since time.Duration) error {
	if threshold < 1 {
		return &usageError{"--threshold N is required (at least 1)"}
	}
	if since <= 0 {
		return &usageError{"--since wants a positive duration such as 24h (a week: 168h)"}
	}
	rep, raw, err := x.c.Replay(ctx, threshold, company, since)
	if err != nil {
		return err
	}
	if x.json {
		fmt.Fprintln(x.stdout, strings.TrimSpace(string(raw)))
		return nil
	}
	fmt.Fprintf(x.stdout, "threshold %d over %s .. %s (window %s, %d stored events read)\n",
		rep.Threshold, rep.From.Format(time.RFC3339), rep.To.Format(time.RFC3339), rep.Window, rep.Events)
	if len(rep.Accounts) == 0 {
		fmt.Fprintln(x.stdout, "no account would have been suspended, and none was")
		return nil
	}
	tw := tabwriter.NewWriter(x.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tCOMPANY\tWOULD\tACTUALLY")
	for _, a := range rep.Accounts {
		var would, actual []string
		for _, c := range a.Would {
			would = append(would, fmt.Sprintf("%s at %s, count %d", c.Action, c.At.UTC().Format(time.RFC3339), c.Count))
		}
		for _, c := range a.Actual {
			actual = append(actual, fmt.Sprintf("%s at %s, count %d > %d", c.Action, c.At.UTC().Format(time.RFC3339), c.Count, c.Threshold))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Account, dash(a.Company), dash(strings.Join(would, "; ")), dash(strings.Join(actual, "; ")))
	}
	return tw.Flush()
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
