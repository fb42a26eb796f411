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
// transport reads them: 75 makes Postfix retry later, other failures
// bounce the report with aupctl's message.
const (
	exDataErr  = 65 // the report was refused (not ARF, no local account)
	exTempFail = 75 // aupd unreachable or could not store it: retry
	exNoPerm   = 77 // the token was refused
	exConfig   = 78 // bad command line or token file
)

// exitCodeError ends aupctl with a given exit code.
type exitCodeError struct {
	code int
	msg  string
}

func (e *exitCodeError) Error() string { return e.msg }

func addIngestCommands(commands map[string]command) {
	var tokenFile string
	commands["ingest-arf"] = command{args: "[--token-file FILE] < REPORT", minArgs: 0, maxArgs: 0, flags: func(fs *flag.FlagSet) *flags {
		fs.StringVar(&tokenFile, "token-file", "", "")
		return &flags{}
	}, run: func(ctx context.Context, x *cli, _ []string, _ *flags) error { return ingestARFCmd(ctx, x, tokenFile) }}
	var threshold int
	var company string
	var since time.Duration
	commands["replay"] = command{args: "--threshold N [--company ID] [--since 24h]", minArgs: 0, maxArgs: 0, flags: func(fs *flag.FlagSet) *flags {
		fs.IntVar(&threshold, "threshold", 0, "")
		fs.StringVar(&company, "company", "", "")
		fs.DurationVar(&since, "since", 24*time.Hour, "")
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
			return &exitCodeError{exConfig, fmt.Sprintf("token file: %v", err)}
		}
		c, err := client.New(x.server, strings.TrimSpace(string(b)), nil)
		if err != nil {
			return &exitCodeError{exConfig, err.Error()}
		}
		x.c = c
	}
	report, err := io.ReadAll(io.LimitReader(x.stdin, arf.MaxReport+1))
	if err != nil {
		return &exitCodeError{exTempFail, fmt.Sprintf("read the report: %v", err)}
	}
	if len(report) > arf.MaxReport {
		return &exitCodeError{exDataErr, fmt.Sprintf("refused: the report is larger than %d bytes", arf.MaxReport)}
	}
	a, raw, err := x.c.IngestARF(ctx, report)
	if x.json && raw != nil {
		fmt.Fprintln(x.stdout, strings.TrimSpace(string(raw)))
	}
	if err != nil {
		st := client.StatusOf(err)
		switch {
		case st == 422 && a != nil && len(a.Results) > 0:
			r := a.Results[0]
			return &exitCodeError{exDataErr, fmt.Sprintf("refused (%s): %s", r.Reason, r.Detail)}
		case st == 401 || st == 403:
			return &exitCodeError{exNoPerm, err.Error()}
		case st >= 400 && st < 500 && st != 408 && st != 429:
			return &exitCodeError{exDataErr, err.Error()}
		}
		return &exitCodeError{exTempFail, fmt.Sprintf("not stored, retry later: %v", err)}
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
