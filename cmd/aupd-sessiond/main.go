// Command aupd-sessiond holds aupd's mailbox session locks for the IMAP
// and POP3 sessions of a Dovecot host (docs/dovecot.md, "Mailbox session
// locks").
//
//	aupd-sessiond agent [-config FILE]                  the per-host agent (systemd)
//	aupd-sessiond login [-config FILE] imap|pop3 NEXT...  Dovecot's post-login program
//	aupd-sessiond check-config [FILE]                   validate the settings and print them
//	aupd-sessiond version                               print the version
//
// The settings file defaults to /etc/aupd/sessiond.yml (env
// AUPD_SESSIOND_CONFIG).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"go.yaml.in/yaml/v3"

	"github.com/aupd/aupd/internal/buildinfo"
	"github.com/aupd/aupd/internal/sessionagent"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `usage: aupd-sessiond agent [-config FILE]                    run the agent
       aupd-sessiond login [-config FILE] imap|pop3 NEXT...   Dovecot post-login program
       aupd-sessiond check-config [FILE]                     validate the settings and print them
       aupd-sessiond version                                 print the version, revision and build date
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("aupd-sessiond "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv("AUPD_SESSIOND_CONFIG")
	if def == "" {
		def = sessionagent.DefaultConfigFile
	}
	path := fs.String("config", def, "settings file (YAML)")
	debug := fs.Bool("debug", false, "log every lock taken and released")
	switch cmd {
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "aupd-sessiond", buildinfo.Read())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "check-config":
		if len(args) > 0 {
			*path = args[0]
		}
		cfg, err := sessionagent.LoadConfig(*path)
		if err != nil {
			fmt.Fprintln(stderr, "aupd-sessiond:", err)
			return 1
		}
		out, _ := yaml.Marshal(cfg)
		fmt.Fprintf(stdout, "%s# a client that vanishes is released at most %s after its last packet\n",
			out, cfg.Keepalive.VanishBound())
		return 0
	case "agent", "login":
	default:
		fmt.Fprintf(stderr, "aupd-sessiond: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if cmd == "login" {
		// stderr goes to Dovecot's log.
		if fs.NArg() < 1 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		cfg, err := sessionagent.LoadConfig(*path)
		if err != nil {
			// Without its settings, the program follows the default,
			// on_error: allow.
			log.Error("session allowed without a lock", "err", err)
			cfg, _ = sessionagent.Config{Socket: "-"}.Complete()
		}
		return sessionagent.Login(cfg, fs.Arg(0), fs.Args()[1:], log.With("program", "aupd-sessiond login"))
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "aupd-sessiond: unexpected argument %q\n%s", fs.Arg(0), usage)
		return 2
	}
	cfg, err := sessionagent.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, "aupd-sessiond:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := sessionagent.Run(ctx, cfg, sessionagent.Options{Logger: log}); err != nil {
		log.Error("agent", "err", err)
		return 1
	}
	return 0
}
