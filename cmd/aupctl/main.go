// Command aupctl manages aupd's accounts over its admin API: lock, unlock,
// suspend and reinstate services, read status and history, download the
// evidence.txt of a suspension, list accounts and count licences.
//
// See docs/aupctl.md, or run aupctl --help and aupctl COMMAND --help.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/buildinfo"
	"github.com/aupd/aupd/internal/client"
	"github.com/aupd/aupd/rules"
)

// Exit codes.
const (
	exitOK        = 0
	exitError     = 1 // cannot reach the server, or a server error
	exitUsage     = 2 // bad command line, or a request the server found invalid (400)
	exitNotFound  = 3 // no such account, company, suspension or evidence
	exitRefused   = 4 // authentication failed (401) or not allowed (403)
	exitConflict  = 5 // refused by the account's state (409): delete while suspended, ...
	exitDenied    = 6 // decide: the answer is deny; ready: aupd is not ready
	defaultServer = "http://127.0.0.1:9390"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// cli is one invocation.
type cli struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	server, token  string
	json           bool
	timeout        time.Duration
	c              *client.Client
}

func run(args []string, stdout, stderr io.Writer) int {
	return runIn(args, os.Stdin, stdout, stderr)
}

func runIn(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	x := &cli{stdout: stdout, stderr: stderr, stdin: stdin}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage(commandTable()))
		return exitUsage
	}
	table := commandTable()
	// The command is the first argument that is not a global flag.
	cmdIdx := -1
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "-h" || a == "--help" {
			fmt.Fprint(stdout, usage(table))
			return exitOK
		}
		if a == "--version" || a == "-version" {
			fmt.Fprintln(stdout, "aupctl", buildinfo.Read())
			return exitOK
		}
		if !strings.HasPrefix(a, "-") {
			cmdIdx = i
			break
		}
		if globalTakesValue(a) && i+1 < len(args) {
			i++
		}
	}
	if cmdIdx < 0 {
		fmt.Fprintln(stderr, "aupctl: no command; see aupctl --help")
		return exitUsage
	}
	name := args[cmdIdx]
	rest := append(append([]string{}, args[:cmdIdx]...), args[cmdIdx+1:]...)
	if name == "help" {
		return helpCmd(table, rest, stdout, stderr)
	}
	cmd, ok := table[name]
	if !ok {
		fmt.Fprintf(stderr, "aupctl: unknown command %q; see aupctl --help\n", name)
		return exitUsage
	}
	fs := flag.NewFlagSet("aupctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g := addGlobalFlags(fs)
	f := cmd.flags(fs)
	pos, err := parseInterspersed(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, commandHelp(name, cmd))
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "aupctl %s: %v; see aupctl %s --help\n", name, err, name)
		return exitUsage
	}
	if len(pos) < cmd.minArgs || len(pos) > cmd.maxArgs {
		fmt.Fprintf(stderr, "aupctl %s: want %s; see aupctl %s --help\n", name, cmd.args, name)
		return exitUsage
	}
	setupExit := exitUsage
	if cmd.setupExit != 0 {
		setupExit = cmd.setupExit
	}
	if err := g.resolve(fs, x, os.Getenv, cmd.offline); err != nil {
		fmt.Fprintf(stderr, "aupctl: %v\n", err)
		return setupExit
	}
	if !cmd.offline {
		if x.c, err = client.New(x.server, x.token, nil); err != nil {
			fmt.Fprintf(stderr, "aupctl: %v\n", err)
			return setupExit
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, x.timeout)
	defer cancel()
	if err := cmd.run(ctx, x, pos, f); err != nil {
		return x.fail(name, err)
	}
	return exitOK
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments, as admins type them.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// usageError is a command-line mistake found after parsing.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// errDenied is a deny answer (decide) or not ready (ready): exit 6, with
// the answer already printed.
var errDenied = errors.New("denied")

func (x *cli) fail(name string, err error) int {
	if errors.Is(err, errDenied) {
		return exitDenied
	}
	if code, ok := exitCodeOf(err); ok {
		fmt.Fprintf(x.stderr, "aupctl %s: %v\n", name, err)
		return code
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(x.stderr, "aupctl %s: %s\n", name, ue.msg)
		return exitUsage
	}
	fmt.Fprintf(x.stderr, "aupctl %s: %v\n", name, err)
	switch st := client.StatusOf(err); {
	case st == 404:
		return exitNotFound
	case st == 401 || st == 403:
		return exitRefused
	case st == 409:
		return exitConflict
	case st >= 400 && st < 500:
		return exitUsage
	}
	return exitError
}

// flags holds the command flags; each command uses what it needs.
type flags struct {
	reason    *string
	services  *string
	company   *string
	status    *string
	typ       *string
	suspended *bool
	limit     *int
	out       *string
	stdin     *bool
	text      *string
	wait      *time.Duration
}

// command is one entry of the command table: everything aupctl --help,
// aupctl COMMAND --help and the shell completion say about it comes from
// here, so adding a command is adding one entry.
type command struct {
	group   string // where aupctl --help lists it: account, company, verdicts or other
	args    string // the arguments, as in the usage line
	summary string // one line for aupctl --help
	help    string // what aupctl COMMAND --help adds (may be empty)
	// minArgs and maxArgs bound the positional arguments.
	minArgs, maxArgs int
	// flags defines the command's own flags (with their help text).
	flags func(fs *flag.FlagSet) *flags
	// offline commands need no server, settings or token (hash-token,
	// version, completion).
	offline bool
	// setupExit is the exit code when the settings cannot be read (config
	// or token file, server URL); 0 means exitUsage. ingest-arf answers
	// Postfix with sysexits codes.
	setupExit int
	run       func(ctx context.Context, x *cli, args []string, f *flags) error
}

func withReason(fs *flag.FlagSet) *flags {
	return &flags{reason: fs.String("reason", "", "why (required): recorded in the history and the account event")}
}

func withServices(fs *flag.FlagSet) *flags {
	f := withReason(fs)
	f.services = fs.String("service", "", "comma-separated services: send, receive, imap, pop3, webmail, webmail_send")
	fs.StringVar(f.services, "services", "", "same as --service")
	return f
}

func noFlags(*flag.FlagSet) *flags { return &flags{} }

// statusActions are the status changes, with their summaries.
var statusActions = []struct{ name, summary string }{
	{"lock", "lock the account (logins denied, mail delivered)"},
	{"unlock", "end a lock or a lockout"},
	{"end-lockout", "end a failed-login lockout early"},
	{"maintenance", "maintenance: logins denied, mail queued"},
	{"close", "close: logins denied, mail bounced (still billed)"},
	{"activate", "make the account active again (from any status)"},
}

// commandTable returns the commands by name.
func commandTable() map[string]command {
	commands := map[string]command{
		"status": {group: "account", args: "ADDRESS", summary: "show status, suspensions, counts, last suspension", minArgs: 1, maxArgs: 1, flags: noFlags, run: statusShow},
		"suspend": {group: "account", args: "ADDRESS --service LIST --reason TEXT", summary: "suspend services", minArgs: 1, maxArgs: 1, flags: withServices, run: suspendCmd,
			help: "Suspends the given services of an account. send and webmail_send are what an AUP suspension stops; receive, imap, pop3 and webmail can be suspended by hand."},
		"reinstate": {group: "account", args: "ADDRESS [--service LIST] --reason TEXT", summary: "lift suspensions (all when --service is not given)", minArgs: 1, maxArgs: 1, flags: withServices, run: reinstateCmd,
			help: "Lifts suspensions. Reinstating an AUP service (send or webmail_send) lifts both and resets the window: messages counted before it never count again."},
		"set": {group: "account", args: "ADDRESS [--type mailbox|forward] [--company ID] --reason TEXT", summary: "create an account or set its type or company", minArgs: 1, maxArgs: 1, flags: func(fs *flag.FlagSet) *flags {
			f := withReason(fs)
			f.typ = fs.String("type", "", "mailbox or forward")
			f.company = fs.String("company", "", "the owning company's id")
			return f
		}, run: setCmd},
		"delete": {group: "account", args: "ADDRESS --reason TEXT", summary: "delete (refused while any service is suspended)", minArgs: 1, maxArgs: 1, flags: withReason, run: deleteCmd},
		"history": {group: "account", args: "ADDRESS [--limit N]", summary: "the account's history, newest first", minArgs: 1, maxArgs: 1, flags: func(fs *flag.FlagSet) *flags {
			return &flags{limit: fs.Int("limit", 50, "entries to show, 1 to 1000")}
		}, run: historyCmd},
		"note": {group: "account", args: "ADDRESS --text TEXT", summary: "add a case note to the account's history", minArgs: 1, maxArgs: 1, flags: func(fs *flag.FlagSet) *flags {
			return &flags{text: fs.String("text", "", "the note (required): plain text, at most 1,000 characters")}
		}, run: noteCmd,
			help: "Adds a note (\"called the user, new password set\") to the account's history, with your token's name as its author. It changes nothing else. Needs role abuse; an account aupd holds no record of gets no note (exit 3)."},
		"evidence": {group: "account", args: "ADDRESS SUSPENSION-ID [--out FILE]", summary: "download the evidence.txt of a suspension", minArgs: 2, maxArgs: 2, flags: func(fs *flag.FlagSet) *flags {
			return &flags{out: fs.String("out", "", "write to FILE instead of standard output")}
		}, run: evidenceCmd},
		"decide": {group: "account", args: "ADDRESS ACCESS", summary: "what aupd answers for an access; exit 6 on deny", minArgs: 2, maxArgs: 2, flags: noFlags, run: decideCmd,
			help: "ACCESS is login_imap, login_pop3, login_webmail, login_smtp, send_smtp, send_webmail or receive. Exits 0 when the answer is allow, 6 when it is deny."},
		"list": {group: "account", args: "[--company ID] [--status S] [--suspended] [--limit N]", summary: "list accounts (all pages up to --limit)", flags: func(fs *flag.FlagSet) *flags {
			return &flags{company: fs.String("company", "", "only this company's accounts"), status: fs.String("status", "", "only accounts with this status"),
				suspended: fs.Bool("suspended", false, "only accounts with a suspended service"), limit: fs.Int("limit", 1000, "at most this many accounts")}
		}, run: listCmd},
		"companies": {group: "company", args: "", summary: "list companies", flags: noFlags, run: companiesCmd},
		"company":   {group: "company", args: "ID", summary: "show one company", minArgs: 1, maxArgs: 1, flags: noFlags, run: companyCmd},
		"licences":  {group: "company", args: "COMPANY", summary: "count a company's licences (closed and suspended count)", minArgs: 1, maxArgs: 1, flags: noFlags, run: licencesCmd},
		"hash-token": {group: "other", args: "[--stdin]", summary: "make a new API token and its config hash (or hash one read from stdin)", offline: true, flags: func(fs *flag.FlagSet) *flags {
			return &flags{stdin: fs.Bool("stdin", false, "hash the token read from standard input")}
		}, run: hashTokenCmd},
		"ready": {group: "other", args: "[--wait D]", summary: "ask aupd's /readyz; exit 0 when ready, 6 when not (needs no token)", flags: func(fs *flag.FlagSet) *flags {
			return &flags{wait: fs.Duration("wait", 0, "ask again until aupd is ready or D has passed, saying on stderr what it waits for (0: ask once)")}
		}, run: readyCmd,
			help: "With --wait D, asks every 250 ms until aupd is ready (exit 0) or D has passed; then exits as one ask would: 6 when aupd answers not ready, 1 when it does not answer. --timeout bounds each request, not the wait."},
		"version": {group: "other", args: "", summary: "print aupctl's version and VCS revision", offline: true, flags: noFlags, run: versionCmd},
		"completion": {group: "other", args: "bash|zsh|fish", summary: "print a shell completion script", minArgs: 1, maxArgs: 1, offline: true, flags: noFlags, run: completionCmd,
			help: "Load it in your shell: source <(aupctl completion bash), aupctl completion zsh > \"${fpath[1]}/_aupctl\", or aupctl completion fish > ~/.config/fish/completions/aupctl.fish."},
	}
	for _, a := range statusActions {
		commands[a.name] = command{group: "account", args: "ADDRESS --reason TEXT", summary: a.summary, minArgs: 1, maxArgs: 1, flags: withReason, run: statusCmd(a.name)}
	}
	addIngestCommands(commands)
	commands["import"] = importCommand()
	return commands
}

func needReason(f *flags) error {
	if strings.TrimSpace(*f.reason) == "" {
		return &usageError{"--reason is required: every change is recorded with its reason"}
	}
	return nil
}

func parseServices(s string) ([]rules.Service, error) {
	var out []rules.Service
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		svc := rules.Service(p)
		if !svc.Valid() {
			return nil, &usageError{fmt.Sprintf("unknown service %q: use send, receive, imap, pop3, webmail, webmail_send", p)}
		}
		out = append(out, svc)
	}
	return out, nil
}

// printRaw prints the server's JSON as it came.
// printJSON prints what aupctl makes itself (not the server's answer) as
// JSON, for -o json.
func (x *cli) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	x.printRaw(b)
	return nil
}

func (x *cli) printRaw(raw []byte) {
	_, _ = x.stdout.Write(raw)
	if len(raw) > 0 && raw[len(raw)-1] != '\n' {
		fmt.Fprintln(x.stdout)
	}
}

func statusCmd(action string) func(context.Context, *cli, []string, *flags) error {
	return func(ctx context.Context, x *cli, args []string, f *flags) error {
		if err := needReason(f); err != nil {
			return err
		}
		cr, raw, err := x.c.SetStatus(ctx, args[0], action, *f.reason)
		if err != nil {
			return err
		}
		x.printChange(cr, raw, action)
		return nil
	}
}

func (x *cli) printChange(cr *apitypes.ChangeResponse, raw []byte, what string) {
	if x.json {
		x.printRaw(raw)
		return
	}
	if !cr.Changed {
		fmt.Fprintf(x.stdout, "%s: nothing to change (%s)\n", cr.Account.Address, summary(cr.Account))
		return
	}
	fmt.Fprintf(x.stdout, "%s: %s done (%s)\n", cr.Account.Address, what, summary(cr.Account))
}

func summary(a *apitypes.Account) string {
	s := "status " + string(a.Status)
	if len(a.Suspended) > 0 {
		s += ", suspended " + strings.Join(a.Suspended, ",")
	} else {
		s += ", no suspensions"
	}
	return s
}

func suspendCmd(ctx context.Context, x *cli, args []string, f *flags) error {
	if err := needReason(f); err != nil {
		return err
	}
	svcs, err := parseServices(*f.services)
	if err != nil {
		return err
	}
	if len(svcs) == 0 {
		return &usageError{"--service is required, for example --service send,imap"}
	}
	cr, raw, err := x.c.Suspend(ctx, args[0], svcs, *f.reason)
	if err != nil {
		return err
	}
	x.printChange(cr, raw, "suspend")
	return nil
}

func reinstateCmd(ctx context.Context, x *cli, args []string, f *flags) error {
	if err := needReason(f); err != nil {
		return err
	}
	svcs, err := parseServices(*f.services)
	if err != nil {
		return err
	}
	cr, raw, err := x.c.Reinstate(ctx, args[0], svcs, *f.reason)
	if err != nil {
		return err
	}
	x.printChange(cr, raw, "reinstate")
	return nil
}

func setCmd(ctx context.Context, x *cli, args []string, f *flags) error {
	if err := needReason(f); err != nil {
		return err
	}
	cr, raw, err := x.c.SetAccount(ctx, args[0], rules.AccountType(*f.typ), *f.company, *f.reason)
	if err != nil {
		return err
	}
	x.printChange(cr, raw, "set")
	return nil
}

func deleteCmd(ctx context.Context, x *cli, args []string, f *flags) error {
	if err := needReason(f); err != nil {
		return err
	}
	raw, err := x.c.Delete(ctx, args[0], *f.reason)
	if err != nil {
		return err
	}
	if x.json {
		x.printRaw(raw)
		return nil
	}
	fmt.Fprintf(x.stdout, "%s: deleted\n", args[0])
	return nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ofThreshold is " of N" for a known threshold.
func ofThreshold(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(" of %d", n)
}

func statusShow(ctx context.Context, x *cli, args []string, _ *flags) error {
	a, raw, err := x.c.Account(ctx, args[0])
	if err != nil {
		return err
	}
	if x.json {
		x.printRaw(raw)
		return nil
	}
	w := tabwriter.NewWriter(x.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Account:\t%s\n", a.Address)
	if !a.Exists {
		// Seen only in verdicts: counting, but no record and no licence.
		line := "not provisioned"
		if c := a.Counts; c != nil {
			line += fmt.Sprintf("; %d%s counted", c.Counting.Total, ofThreshold(a.Threshold))
		}
		fmt.Fprintf(w, "Record:\tnone, %s\n", line)
	}
	fmt.Fprintf(w, "Type:\t%s\n", a.Type)
	fmt.Fprintf(w, "Company:\t%s\n", orDash(a.Company))
	st := string(a.Status)
	if a.LockoutUntil != nil {
		st += " until " + fmtTime(*a.LockoutUntil)
	}
	if si := a.StatusInfo; si != nil {
		st += fmt.Sprintf(" (by %s at %s: %s)", si.Actor, fmtTime(si.At), orDash(si.Note))
	}
	fmt.Fprintf(w, "Status:\t%s\n", st)
	if len(a.Suspensions) == 0 {
		fmt.Fprintf(w, "Suspended:\tnothing\n")
	}
	for i, s := range a.Suspensions {
		label := ""
		if i == 0 {
			label = "Suspended:"
		}
		fmt.Fprintf(w, "%s\t%s: %s by %s at %s (id %s) %s\n", label, s.Service, s.Reason, s.Actor, fmtTime(s.At), s.ID, s.Note)
	}
	if c := a.Counts; c != nil {
		atLeast := func(t bool) string {
			if t {
				return "at least "
			}
			return ""
		}
		fmt.Fprintf(w, "Counting (since %s):\t%s%d%s (outbound %d, inbound %d, complaint %d)\n", fmtTime(c.WindowStart), atLeast(c.Counting.AtLeast), c.Counting.Total, ofThreshold(a.Threshold),
			c.Counting.ByDirection[rules.Outbound], c.Counting.ByDirection[rules.Inbound], c.Counting.ByDirection[rules.Complaint])
		for _, d := range rules.Directions {
			var parts []string
			for _, v := range rules.Verdicts {
				if n := c.Counting.ByVerdict[d][v] + c.Other.ByVerdict[d][v]; n > 0 {
					parts = append(parts, fmt.Sprintf("%s %d", v, n))
				}
			}
			if len(parts) > 0 {
				fmt.Fprintf(w, "  %s:\t%s\n", d, strings.Join(parts, ", "))
			}
		}
		fmt.Fprintf(w, "Not counting:\t%s%d\n", atLeast(c.Other.AtLeast), c.Other.Total)
	}
	// Signs of a compromise: who sent the counted messages, recent logins.
	for i, snd := range a.Senders {
		label := ""
		if i == 0 {
			label = "Sent by:"
		}
		fmt.Fprintf(w, "%s\t%s login %s: at least %d, last %s\n", label, orDash(snd.IP), orDash(snd.Login), snd.Count, fmtTime(snd.Last))
	}
	for i, l := range a.Logins {
		label := ""
		if i == 0 {
			label = "Recent logins:"
		}
		fmt.Fprintf(w, "%s\t%s %s from %s: %d, last %s\n", label, l.Result, orDash(l.Protocol), orDash(l.IP), l.Count, fmtTime(l.Last))
	}
	if ls := a.LastSuspension; ls != nil {
		inForce := "lifted"
		if ls.InForce {
			inForce = "in force"
		}
		fmt.Fprintf(w, "Last AUP %s:\t%s at %s, %s, count %d > threshold %d\n", ls.Action, ls.ID, fmtTime(ls.WindowEnd), inForce, ls.Count, ls.Threshold)
		if ls.Rule != "" {
			fmt.Fprintf(w, "Rule:\t%s\n", ls.Rule)
		}
		if v := ls.Volume; v != nil {
			fmt.Fprintf(w, "Volume:\t%d %s within %s, since %s, from %s\n", ls.Count, v.Kind,
				time.Duration(v.WindowSeconds)*time.Second, fmtTime(v.Since), orDash(strings.Join(v.Clients, ", ")))
		}
		if ls.Notice != nil {
			fmt.Fprintf(w, "Notice:\t%s\n", noticeLine(ls.Notice))
		}
	}
	return w.Flush()
}

func historyCmd(ctx context.Context, x *cli, args []string, f *flags) error {
	if *f.limit < 1 || *f.limit > 1000 {
		return &usageError{"--limit must be 1 to 1000"}
	}
	h, raw, err := x.c.History(ctx, args[0], 0, *f.limit)
	if err != nil {
		return err
	}
	if x.json {
		x.printRaw(raw)
		return nil
	}
	w := tabwriter.NewWriter(x.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tACTOR\tVIA\tACTION\tWHAT\tREASON\tNOTE")
	for _, e := range h.Entries {
		what := e.Status
		if len(e.Services) > 0 {
			what = strings.Join(e.Services, ",")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", fmtTime(e.Time), e.Actor, orDash(e.Via), e.Action, orDash(what), orDash(e.Reason), orDash(oneLine(e.Note)))
	}
	return w.Flush()
}

func noteCmd(ctx context.Context, x *cli, args []string, f *flags) error {
	if strings.TrimSpace(*f.text) == "" {
		return &usageError{"--text is required: the note to add"}
	}
	nr, raw, err := x.c.Note(ctx, args[0], *f.text)
	if err != nil {
		return err
	}
	if x.json {
		x.printRaw(raw)
		return nil
	}
	fmt.Fprintf(x.stdout, "%s: note added by %s at %s\n", args[0], nr.Entry.Actor, fmtTime(nr.Entry.Time))
	return nil
}

// oneLine shows a multi-line note on one line of a table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func evidenceCmd(ctx context.Context, x *cli, args []string, f *flags) error {
	data, err := x.c.Evidence(ctx, args[0], args[1])
	if err != nil {
		return err
	}
	if *f.out == "" || *f.out == "-" {
		_, err = x.stdout.Write(data)
		return err
	}
	if err := os.WriteFile(*f.out, data, 0o600); err != nil {
		return fmt.Errorf("write evidence: %w", err)
	}
	fmt.Fprintf(x.stderr, "wrote %d bytes to %s\n", len(data), *f.out)
	return nil
}

func decideCmd(ctx context.Context, x *cli, args []string, _ *flags) error {
	d, raw, err := x.c.Decide(ctx, args[0], rules.Access(args[1]))
	if err != nil {
		return err
	}
	if x.json {
		x.printRaw(raw)
		if d.Result != rules.Allow {
			return errDenied
		}
		return nil
	}
	fmt.Fprintf(x.stdout, "%s %s: %s (%s)", d.Account, d.Access, d.Result, d.Code)
	if d.Masked {
		fmt.Fprint(x.stdout, ", masked: the user sees only an invalid login")
	}
	fmt.Fprintln(x.stdout)
	if d.Result != rules.Allow {
		return errDenied
	}
	return nil
}

func listCmd(ctx context.Context, x *cli, _ []string, f *flags) error {
	if *f.limit < 1 {
		return &usageError{"--limit must be positive"}
	}
	q := client.ListQuery{Company: *f.company, Status: *f.status, Suspended: *f.suspended}
	var all []*apitypes.Account
	for {
		q.Limit = min(*f.limit-len(all), 1000)
		page, _, err := x.c.List(ctx, q)
		if err != nil {
			return err
		}
		all = append(all, page.Accounts...)
		if page.NextCursor == "" || len(all) >= *f.limit {
			break
		}
		q.Cursor = page.NextCursor
	}
	if x.json {
		b, _ := json.MarshalIndent(apitypes.AccountList{Accounts: all}, "", "  ")
		x.printRaw(b)
		return nil
	}
	w := tabwriter.NewWriter(x.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ACCOUNT\tTYPE\tCOMPANY\tSTATUS\tSUSPENDED")
	for _, a := range all {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", a.Address, a.Type, orDash(a.Company), a.Status, orDash(strings.Join(a.Suspended, ",")))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(x.stderr, "%d accounts\n", len(all))
	return nil
}

func companiesCmd(ctx context.Context, x *cli, _ []string, _ *flags) error {
	var all []*apitypes.Company
	cursor := ""
	for {
		page, _, err := x.c.Companies(ctx, cursor, 1000)
		if err != nil {
			return err
		}
		all = append(all, page.Companies...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if x.json {
		b, _ := json.MarshalIndent(apitypes.CompanyList{Companies: all}, "", "  ")
		x.printRaw(b)
		return nil
	}
	w := tabwriter.NewWriter(x.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tNAME\tDOMAINS\tABUSE CONTACT\tTHRESHOLD\tSOURCE")
	for _, c := range all {
		th := "default"
		if c.Threshold != nil {
			th = fmt.Sprint(*c.Threshold)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, orDash(c.Name), strings.Join(c.Domains, ","), orDash(c.AbuseContact), th, c.Source)
	}
	return w.Flush()
}

func companyCmd(ctx context.Context, x *cli, args []string, _ *flags) error {
	_, raw, err := x.c.Company(ctx, args[0])
	if err != nil {
		return err
	}
	// A company is small and nested: JSON is its table.
	x.printRaw(raw)
	return nil
}

func licencesCmd(ctx context.Context, x *cli, args []string, _ *flags) error {
	l, raw, err := x.c.Licences(ctx, args[0])
	if err != nil {
		return err
	}
	if x.json {
		x.printRaw(raw)
		return nil
	}
	w := tabwriter.NewWriter(x.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Company:\t%s\n", l.Company)
	fmt.Fprintf(w, "Licences:\t%d\n", l.Total)
	fmt.Fprintf(w, "  provisioned:\t%d\n  holding state, not provisioned:\t%d\n", l.Provisioned, l.Unprovisioned)
	for _, st := range rules.Statuses {
		fmt.Fprintf(w, "  %s:\t%d\n", st, l.ByStatus[st])
	}
	fmt.Fprintf(w, "With suspended services:\t%d\n", l.Suspended)
	return w.Flush()
}

func hashTokenCmd(_ context.Context, x *cli, _ []string, f *flags) error {
	if *f.stdin {
		line, err := bufio.NewReader(x.stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read token: %w", err)
		}
		tok := strings.TrimSpace(line)
		if tok == "" {
			return &usageError{"no token on stdin"}
		}
		if x.json {
			return x.printJSON(map[string]string{"hash": auth.HashToken(tok)})
		}
		fmt.Fprintln(x.stdout, auth.HashToken(tok))
		return nil
	}
	tok := auth.NewToken()
	if x.json {
		err := x.printJSON(map[string]string{"token": tok, "hash": auth.HashToken(tok)})
		fmt.Fprintln(x.stderr, "Give the token to its user; put only the hash in aupd's config (auth.tokens[].hash).")
		return err
	}
	fmt.Fprintf(x.stdout, "token: %s\nhash:  %s\n", tok, auth.HashToken(tok))
	fmt.Fprintln(x.stderr, "Give the token to its user; put only the hash in aupd's config (auth.tokens[].hash).")
	return nil
}

// noticeLine summarises a notice's delivery state on one line.
func noticeLine(n any) string {
	b, _ := json.Marshal(n)
	var d struct {
		State     string `json:"state"`
		Recipient string `json:"recipient"`
		Attempts  int    `json:"attempts"`
		SentAt    string `json:"sent_at"`
		LastError string `json:"last_error"`
		Note      string `json:"recipient_note"`
	}
	if json.Unmarshal(b, &d) != nil || d.State == "" {
		return string(b)
	}
	line := d.State
	if d.Recipient != "" {
		line += " to " + d.Recipient
	}
	line += fmt.Sprintf(", %d attempt(s)", d.Attempts)
	if d.SentAt != "" {
		line += ", sent " + d.SentAt
	}
	if d.LastError != "" {
		line += ", last error: " + d.LastError
	}
	if d.Note != "" && d.Note != d.LastError {
		line += " (" + d.Note + ")"
	}
	return line
}
