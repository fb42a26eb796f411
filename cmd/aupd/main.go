// Command aupd is the abuse and spam suspension service: it consumes
// verdict events from JetStream, keeps rolling counts in Redis, suspends
// accounts that exceed the AUP threshold and notifies abuse contacts.
//
//	aupd [run] [-config FILE]    run (embedded NATS when no nats.url is set)
//	aupd check-config FILE       validate a config file and print it, secrets hidden
//	aupd version                 print the version, VCS revision and build date (also --version)
//	aupd help                    print the usage
//
// Anything else is an error: a typo never starts the daemon.
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
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"

	"github.com/aupd/aupd/internal/app"
	"github.com/aupd/aupd/internal/buildinfo"
	"github.com/aupd/aupd/internal/config"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `usage: aupd [run] [-config FILE]   run aupd
       aupd check-config FILE       validate a config file and print it, secrets hidden
       aupd version                 print the version, revision and build date (also --version)
       aupd help                    print this help
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		args = append([]string{"version"}, args[1:]...) // as aupctl --version
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "check-config":
			return checkConfig(args[1:], stdout, stderr)
		case "version":
			if len(args) > 1 {
				fmt.Fprintf(stderr, "aupd version: unexpected argument %q\n%s", args[1], usage)
				return 2
			}
			fmt.Fprintln(stdout, "aupd", buildinfo.Read())
			return 0
		case "help":
			fmt.Fprint(stdout, usage)
			return 0
		case "run":
			args = args[1:]
		default:
			fmt.Fprintf(stderr, "aupd: unknown command %q\n%s", args[0], usage)
			return 2
		}
	}
	fs := flag.NewFlagSet("aupd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("AUPD_CONFIG"), "config file (YAML); empty: built-in defaults (env AUPD_CONFIG)")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage+"\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "aupd: unexpected argument %q\n%s", fs.Arg(0), usage)
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, "aupd:", err)
		return 2
	}
	logger := newLogger(cfg.Log, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, app.Options{Config: cfg, ConfigPath: *path, Logger: logger}); err != nil {
		logger.Error("aupd exited", "err", err)
		return 1
	}
	return 0
}

func checkConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: aupd check-config FILE")
		return 2
	}
	cfg, err := config.Load(args[0])
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK\n# %s\n", args[0], cfg.OutsideCompanies(len(cfg.Companies)))
	for _, w := range cfg.NoticeWarnings() {
		fmt.Fprintf(stdout, "# warning: %s\n", w)
	}
	for _, n := range cfg.Desk.Notes() {
		fmt.Fprintf(stdout, "# note: %s\n", n)
	}
	fmt.Fprintln(stdout, "---")
	cfg.NATS.URL = config.RedactURL(cfg.NATS.URL)
	enc := yaml.NewEncoder(stdout)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
