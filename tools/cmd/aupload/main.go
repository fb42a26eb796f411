// Command aupload measures aupd's throughput end to end on real NATS and
// Redis, beside the ceilings of its parts measured in the same run (the
// Redis script alone, JetStream consume+ack alone), and the Redis memory
// an account takes.
//
// It is part of the harness's module, tools/, and runs from the
// repository root with go -C tools, which makes tools/ its working
// directory: a relative path given to it (-cpuprofile, -dir) is under
// tools/.
//
// By default it starts its own NATS server with JetStream in a temporary
// directory and uses the local Redis under a random key prefix that it
// deletes at the end, so it touches no other data:
//
//	go -C tools run ./cmd/aupload
//	go -C tools run ./cmd/aupload -events 500000 -accounts 50000 -cpuprofile /tmp/aupload.prof
//	go -C tools run ./cmd/aupload -phases e   # time to enforcement at half the drain rate
//
// -nats URL uses a running server instead; it must hold no aupd streams
// (aupload creates and deletes AUP_VERDICTS, AUP_ACCOUNTS and
// AUP_DEAD_LETTERS there).
//
// Three subcommands run on a loopback cluster (docs/scaling.md):
//
//	go -C tools run ./cmd/aupload cluster     # 3 NATS nodes, a Redis Cluster, aupd processes, an SMTP sink; Ctrl-C tears down
//	go -C tools run ./cmd/aupload campaign    # the fault campaign on that cluster; exit 0 only when nothing is lost or doubled
//	go -C tools run ./cmd/aupload scale       # events/s and CPU per event with 1, 2 and 3 aupd processes, for the capacity model, and on a standalone Redis
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/tools/loadtest"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "cluster":
			os.Exit(clusterCmd(os.Args[2:]))
		case "campaign":
			os.Exit(campaignCmd(os.Args[2:]))
		case "scale":
			os.Exit(scaleCmd(os.Args[2:]))
		}
	}
	def := config.Default().NATS.Consumer
	var c loadtest.Config
	flag.IntVar(&c.Events, "events", 200000, "events to publish `N`")
	flag.IntVar(&c.Accounts, "accounts", 10000, "accounts `M` the events are for")
	flag.IntVar(&c.Batch, "batch", def.Batch, "events per fetch and per Redis pipeline (nats.consumer.batch)")
	flag.IntVar(&c.Workers, "workers", def.Workers, "concurrent fetch loops / Redis callers (nats.consumer.workers)")
	fill := flag.Duration("fill-wait", def.FillWait, "how long a fetch waits to fill its batch (nats.consumer.fill_wait; 0: none, a fetch waits max_wait)")
	seconds := flag.Int("seconds", 300, "bound on each phase's wait, in seconds")
	flag.StringVar(&c.RedisAddr, "redis", "127.0.0.1:6379", "Redis address (keys under a random prefix, deleted at the end)")
	flag.StringVar(&c.NATSURL, "nats", "", "NATS server with JetStream and no aupd streams on it (default: an in-process server)")
	flag.StringVar(&c.Phases, "phases", "abcd", "phases to run: a Redis alone, b JetStream alone, c end to end, d memory, e time to enforcement (off by default) (with b and c, the ceiling is measured again after each round of c)")
	flag.IntVar(&c.Rounds, "rounds", 3, "rounds of the end-to-end phase, each with fresh events and keys; the ratios' verdict is on their median")
	flag.IntVar(&c.MemAccts, "mem-accounts", 1000, "accounts per memory measurement")
	flag.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of the end-to-end phase's first round to `file`")
	flag.Uint64Var(&c.Seed, "seed", 1, "seed of the generated events")
	flag.IntVar(&c.EnforceAccounts, "enforce-accounts", 200, "phase e: accounts made to cross the threshold, each asked about at the policy server until refused")
	flag.DurationVar(&c.EnforceEvery, "enforce-every", 50*time.Millisecond, "phase e: time between two accounts' crossings")
	verbose := flag.Bool("v", false, "log aupd's warnings to stderr")
	flag.Parse()
	c.Timeout = time.Duration(*seconds) * time.Second
	c.FillWait = *fill
	if *fill <= 0 {
		c.FillWait = -1 // none
	}
	if *verbose {
		c.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := loadtest.Run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "aupload:", err)
		os.Exit(1)
	}
}
