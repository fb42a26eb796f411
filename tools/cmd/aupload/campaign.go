package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aupd/aupd/tools/campaign"
)

// The long form's faults, and the short form's (what CI runs as
// TestCampaignShort).
const (
	longFaults  = "aupd-kill=4,aupd-stop=2,nats-kill=2,nats-leader=2,redis-failover=3"
	shortFaults = campaign.ShortFaults
)

// campaignCmd is `aupload campaign`: the fault campaign on a loopback
// cluster. It exits 0 only when every check of the table passes.
func campaignCmd(args []string) int {
	fs := flag.NewFlagSet("aupload campaign", flag.ExitOnError)
	short := fs.Bool("short", false, "the short form: "+campaign.ShortSummary+" (flags given explicitly still apply)")
	events := fs.Int("events", 1_000_000, "events to publish (originals, duplicates and invalid ones)")
	accounts := fs.Int("accounts", 10_000, "accounts the events are for")
	seed := fs.Uint64("seed", 1, "seed of the load and of the fault schedule")
	rate := fs.Int("rate", 2500, "events published per second")
	aupds := fs.Int("aupd", 3, "aupd processes")
	faults := fs.String("faults", longFaults, "faults of each kind, kind=count,... (kinds: "+campaign.Kinds()+")")
	outage := fs.Duration("smtp-outage", 3*time.Minute, "how long the SMTP sink refuses connections (0: no outage)")
	ackWait := fs.Duration("ack-wait", 5*time.Second, "nats.consumer.ack_wait of the aupd processes (aupd-stop stops one past it)")
	dup := fs.Float64("dup", campaign.DefaultDupShare, "share of events that repeat an earlier event id")
	invalid := fs.Float64("invalid", campaign.DefaultInvalidShare, "share of events that are invalid")
	cross := fs.Float64("cross", campaign.DefaultCrossShare, "share of accounts that cross the threshold")
	redisReplicas := fs.Int("redis-replicas", 1, "replicas of each Redis master")
	redisDown := fs.Duration("redis-down", 0, "how long a failed-over Redis master stays down before its restart (default: 0-3 s, seeded)")
	lostDown := fs.Duration("redis-lost-down", 0, "how long a redis-lost master stays down (default 0: until publishing has ended)")
	shardDown := fs.Duration("shard-down", 20*time.Second, "how long a redis-shard fault keeps a master and its replicas down")
	quorumDown := fs.Duration("quorum-down", 15*time.Second, "how long a nats-quorum fault keeps 2 of the 3 NATS nodes down")
	waitReplicas := fs.Int("wait-replicas", 1, "redis.wait_replicas of the aupd processes (0: acknowledge without waiting for the replica)")
	redisExtra := fs.String("redis-setting", "", "more redis: settings for aupd, `key: value` separated by ';' (for example \"wait_timeout: 2s\")")
	drain := fs.Duration("drain-timeout", 15*time.Minute, "bound on the wait for aupd to drain")
	dir := fs.String("dir", "", "the cluster's directory (default: a new temporary directory, removed at the end unless -keep)")
	keep := fs.Bool("keep", false, "keep the directory (configs, data, logs, the SMTP sink's messages, the result) at the end")
	_ = fs.Parse(args)
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := campaign.Config{Events: *events, Accounts: *accounts, Seed: *seed, Rate: *rate, Aupd: *aupds,
		SMTPOutage: *outage, AckWait: *ackWait, DupShare: *dup, InvalidShare: *invalid, CrossShare: *cross,
		DrainTimeout: *drain, WaitReplicas: *waitReplicas, RedisDown: *redisDown, RedisLostDown: *lostDown, ShardDown: *shardDown,
		QuorumDown: *quorumDown, RedisReplicas: *redisReplicas, Log: os.Stderr}
	if *short {
		s := campaign.Short()
		pick := func(name string, dst, short any) {
			if set[name] {
				return
			}
			switch d := dst.(type) {
			case *int:
				*d = short.(int)
			case *time.Duration:
				*d = short.(time.Duration)
			}
		}
		pick("events", &cfg.Events, s.Events)
		pick("accounts", &cfg.Accounts, s.Accounts)
		pick("rate", &cfg.Rate, s.Rate)
		pick("smtp-outage", &cfg.SMTPOutage, s.SMTPOutage)
		if !set["faults"] {
			*faults = shortFaults
		}
	}
	var err error
	if cfg.Faults, err = campaign.ParseCounts(*faults); err != nil {
		fmt.Fprintln(os.Stderr, "aupload campaign:", err)
		return 2
	}
	for s := range strings.SplitSeq(*redisExtra, ";") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.RedisExtra = append(cfg.RedisExtra, s)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg.Dir = *dir
	if cfg.Dir == "" {
		if cfg.Dir, err = os.MkdirTemp("", "aupd-campaign-"); err != nil {
			fmt.Fprintln(os.Stderr, "aupload campaign:", err)
			return 1
		}
		if !*keep {
			defer os.RemoveAll(cfg.Dir)
		}
	}
	if *keep {
		fmt.Fprintln(os.Stderr, "aupload campaign: configs, data, logs, the SMTP sink's messages (smtp/) and the campaign's own log and result (campaign.log, result.txt) stay in", cfg.Dir)
	}
	// The campaign's record goes into the directory too.
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "aupload campaign:", err)
		return 1
	}
	logf, err := os.Create(filepath.Join(cfg.Dir, "campaign.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "aupload campaign:", err)
		return 1
	}
	defer logf.Close()
	cfg.Log = io.MultiWriter(os.Stderr, logf)
	start := time.Now()
	res, err := campaign.Run(ctx, cfg)
	if res != nil && len(res.Rows) > 0 {
		var b bytes.Buffer
		res.Print(&b)
		os.Stdout.Write(b.Bytes()) //nolint:errcheck // nothing to do about a closed stdout
		if werr := os.WriteFile(filepath.Join(cfg.Dir, "result.txt"), b.Bytes(), 0o644); werr != nil {
			fmt.Fprintln(os.Stderr, "aupload campaign:", werr)
		}
	}
	fmt.Fprintf(os.Stderr, "aupload campaign: %s in all\n", time.Since(start).Round(time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, "aupload campaign:", err)
		return 1
	}
	if !res.Pass {
		return 1
	}
	return 0
}
