package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aupd/aupd/tools/scale"
)

// scaleCmd is `aupload scale`: the scaling figures on a loopback cluster
// (docs/scaling.md, "Scaling figures and a capacity model"). It exits 0 only when every run's checks pass.
func scaleCmd(args []string) int {
	fs := flag.NewFlagSet("aupload scale", flag.ExitOnError)
	events := fs.Int("events", 100_000, "events of the backlog each run drains")
	accounts := fs.Int("accounts", 10_000, "accounts the events are for")
	procs := fs.String("procs", "1,2,3", "aupd processes of each run, comma-separated")
	seed := fs.Uint64("seed", 1, "seed of the generated events")
	maxWait := fs.Duration("max-wait", 0, "nats.consumer.max_wait of the aupd processes (0: aupd's default)")
	timeout := fs.Duration("timeout", 10*time.Minute, "bound on each publish and each drain")
	dir := fs.String("dir", "", "the cluster's directory (default: a new temporary directory, removed at the end unless -keep)")
	keep := fs.Bool("keep", false, "keep the directory (configs, data, logs) at the end")
	standalone := fs.Bool("standalone", true, "after the Cluster's runs, drain the backlog once more with one aupd on a standalone Redis with a replica, and compare their Redis CPU an event")
	_ = fs.Parse(args)

	cfg := scale.Config{Events: *events, Accounts: *accounts, Seed: *seed, MaxWait: *maxWait, Timeout: *timeout,
		Standalone: *standalone, Log: os.Stderr}
	for s := range strings.SplitSeq(*procs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintf(os.Stderr, "aupload scale: -procs %q: %v\n", *procs, err)
			return 2
		}
		cfg.Procs = append(cfg.Procs, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg.Dir = *dir
	if cfg.Dir == "" {
		var err error
		if cfg.Dir, err = os.MkdirTemp("", "aupd-scale-"); err != nil {
			fmt.Fprintln(os.Stderr, "aupload scale:", err)
			return 1
		}
		if !*keep {
			defer os.RemoveAll(cfg.Dir)
		}
	}
	if *keep {
		fmt.Fprintln(os.Stderr, "aupload scale: configs, data and logs stay in", cfg.Dir)
	}
	start := time.Now()
	res, err := scale.Run(ctx, cfg)
	if res != nil && len(res.Runs) > 0 {
		res.Print(os.Stdout)
	}
	fmt.Fprintf(os.Stderr, "aupload scale: %s in all\n", time.Since(start).Round(time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, "aupload scale:", err)
		return 1
	}
	if !res.OK() {
		return 1
	}
	return 0
}
