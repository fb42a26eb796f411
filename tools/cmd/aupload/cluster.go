package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/aupd/aupd/internal/cluster"
)

// clusterCmd is `aupload cluster`: it brings the cluster up, says how to
// reach it, waits for Ctrl-C (or SIGTERM) and tears it down.
func clusterCmd(args []string) int {
	fs := flag.NewFlagSet("aupload cluster", flag.ExitOnError)
	dir := fs.String("dir", "", "directory for configs, data and logs (default: a new temporary directory, removed at the end)")
	keep := fs.Bool("keep", false, "keep the directory at the end")
	aupds := fs.Int("aupd", 2, "aupd processes")
	natsNodes := fs.Int("nats-nodes", 3, "NATS nodes (streams are at 3 replicas, or fewer with fewer nodes)")
	masters := fs.Int("redis-masters", 3, "Redis Cluster masters (each with -redis-replicas replicas)")
	replicas := fs.Int("redis-replicas", 1, "replicas per Redis master")
	threshold := fs.Int("threshold", 50, "aup.threshold of the aupd processes")
	waitReplicas := fs.Int("wait-replicas", 1, "redis.wait_replicas of the aupd processes")
	_ = fs.Parse(args)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := *dir
	if d == "" {
		var err error
		if d, err = os.MkdirTemp("", "aupd-cluster-"); err != nil {
			fmt.Fprintln(os.Stderr, "aupload cluster:", err)
			return 1
		}
		if !*keep {
			defer os.RemoveAll(d)
		}
	}
	c, err := cluster.Start(ctx, cluster.Options{
		Dir: d, NATSNodes: *natsNodes, RedisMasters: *masters, RedisReplicas: *replicas, AupdProcesses: *aupds,
		Aupd: cluster.AupdSettings{Threshold: *threshold, Replicas: min(3, *natsNodes), WaitReplicas: min(*waitReplicas, *replicas)},
		Log:  os.Stderr,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "aupload cluster:", err)
		return 1
	}
	defer c.Close()
	fmt.Println()
	c.Describe(os.Stdout)
	fmt.Println()
	fmt.Println("publish verdicts to aup.verdict.outbound on the NATS URLs above; Ctrl-C tears everything down")
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "aupload cluster: tearing down")
	if n := c.SMTP.Count(); n > 0 {
		fmt.Fprintf(os.Stderr, "aupload cluster: the SMTP sink received %d notices\n", n)
	}
	return 0
}
