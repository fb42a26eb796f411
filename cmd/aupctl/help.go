package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// groups orders the commands of aupctl --help.
var groups = []struct{ name, title string }{
	{"account", "Account commands"},
	{"company", "Company commands"},
	{"verdicts", "Verdicts"},
	{"other", "Other"},
}

const exitCodes = `Exit codes:
  0  ok (also when nothing had to change: locking a locked account)
  1  cannot reach aupd, or aupd failed
  2  usage error, or a request aupd found invalid (400)
  3  not found (account, company, suspension or evidence)
  4  refused: bad or missing token (401), or not allowed (403)
  5  conflict: refused by the account's state (409), e.g. delete while suspended
  6  decide: the answer is deny; ready: aupd is not ready
  ingest-arf answers with sysexits codes instead (aupctl ingest-arf --help)
`

// usage is aupctl --help, made from the command table.
func usage(table map[string]command) string {
	var b strings.Builder
	b.WriteString("aupctl: manage aupd accounts over the admin API.\n\nUsage:\n  aupctl [global flags] COMMAND [ARGS] [flags]\n  aupctl COMMAND --help      the command's arguments and flags\n  aupctl --version           the version (as aupctl version)\n")
	names := sortedNames(table)
	for _, g := range groups {
		fmt.Fprintf(&b, "\n%s:\n", g.title)
		for _, n := range names {
			c := table[n]
			if c.group != g.name {
				continue
			}
			line := n
			if c.args != "" {
				line += " " + c.args
			}
			if len(line) > 38 {
				fmt.Fprintf(&b, "  %s\n  %-38s %s\n", line, "", c.summary)
			} else {
				fmt.Fprintf(&b, "  %-38s %s\n", line, c.summary)
			}
		}
	}
	b.WriteString("\nGlobal flags (anywhere on the line):\n")
	b.WriteString(globalHelp)
	b.WriteString("\n" + exitCodes)
	return b.String()
}

// commandHelp is aupctl COMMAND --help.
func commandHelp(name string, c command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: aupctl %s", name)
	if c.args != "" {
		b.WriteString(" " + c.args)
	}
	fmt.Fprintf(&b, "\n\n%s.\n", strings.ToUpper(c.summary[:1])+c.summary[1:])
	if c.help != "" {
		fmt.Fprintf(&b, "\n%s\n", wrap(c.help, 76))
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c.flags(fs)
	var own strings.Builder
	fs.SetOutput(&own)
	fs.PrintDefaults()
	if own.Len() > 0 {
		b.WriteString("\nFlags:\n")
		b.WriteString(own.String())
	}
	b.WriteString("\nGlobal flags:\n" + globalHelp)
	return b.String()
}

// helpCmd is aupctl help [COMMAND].
func helpCmd(table map[string]command, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage(table))
		return exitOK
	}
	c, ok := table[args[0]]
	if !ok || len(args) > 1 {
		fmt.Fprintf(stderr, "aupctl help: unknown command %q; see aupctl --help\n", strings.Join(args, " "))
		return exitUsage
	}
	fmt.Fprint(stdout, commandHelp(args[0], c))
	return exitOK
}

func sortedNames(table map[string]command) []string {
	names := make([]string, 0, len(table))
	for n := range table {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// wrap breaks text into lines of at most width characters.
func wrap(text string, width int) string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return strings.Join(append(lines, line), "\n")
}
