// Package cluster brings up, on loopback and in a directory it is given,
// the engines aupd scales out on, and tears them down: a 3-node NATS
// cluster with JetStream (Debian's nats-server), a Redis Cluster of
// masters with a replica each (redis-server with AOF), N aupd processes
// (the binary built once) pointed at both, and an SMTP sink that records
// every notice and can be taken down. Every process has handles to kill,
// restart, stop and continue it, and helpers find the JetStream stream
// leader and the Redis master of a slot and fail a master over.
//
// It is test support, like internal/testutil: the product's tests use it
// (the store on a real Redis Cluster through a failover), and so does
// the harness in tools/ (the fault campaign, the scaling figures and
// `aupload cluster`), which is why it stays in the product module. No
// binary of the product imports it: scripts/check-release fails if one
// does, or if one links go-smtp, which only this package, the tests and
// internal/testutil use.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Options say what to bring up.
type Options struct {
	Dir           string // everything lives under it (configs, data, logs)
	NATSNodes     int    // default 3
	RedisMasters  int    // default 3
	RedisReplicas int    // replicas per master, default 1
	// RedisNodeTimeout is cluster-node-timeout (default 2s): how soon a
	// dead master's replica takes over.
	RedisNodeTimeout time.Duration
	AupdProcesses    int    // default 2
	AupdBinary       string // default: built into Dir/bin
	Aupd             AupdSettings
	// NoAupd brings up everything but the aupd processes' start (they are
	// configured, not started).
	NoAupdStart bool
	Log         io.Writer // progress lines; nil: none
}

// Cluster is what Start brought up.
type Cluster struct {
	opts  Options
	NATS  []*NATSNode
	Redis []*RedisNode
	Aupd  []*Aupd
	SMTP  *SMTPSink
	Bin   string // the aupd binary

	unlock func() // the machine-wide cluster lock
}

func (o *Options) defaults() error {
	if o.Dir == "" {
		return errors.New("cluster: no directory")
	}
	d := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	d(&o.NATSNodes, 3)
	d(&o.RedisMasters, 3)
	d(&o.RedisReplicas, 1)
	d(&o.AupdProcesses, 2)
	if o.RedisNodeTimeout == 0 {
		o.RedisNodeTimeout = 2 * time.Second
	}
	o.Aupd.defaults()
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Aupd.Replicas > o.NATSNodes {
		return fmt.Errorf("cluster: streams at %d replicas need as many NATS nodes, not %d", o.Aupd.Replicas, o.NATSNodes)
	}
	return nil
}

// portPicker hands out loopback TCP ports, all different, that were free
// a moment ago. They are below the kernel's ephemeral range (32768 and up
// on Linux), so that no outgoing connection takes one of them between a
// kill and a restart of the process that listens there. A Redis Cluster
// node also listens on its port + 10000 (the cluster bus), so Redis ports
// come from 10000-21999 with both checked, the others from 22000-31999.
type portPicker struct {
	lns []net.Listener
}

func (pp *portPicker) close() {
	for _, l := range pp.lns {
		l.Close()
	}
}

func (pp *portPicker) take(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	pp.lns = append(pp.lns, l)
	return true
}

func (pp *portPicker) pick(lo, hi int, bus bool) (int, error) {
	start := rand.IntN(hi - lo)
	for i := range hi - lo {
		port := lo + (start+i)%(hi-lo)
		if !pp.take(port) {
			continue
		}
		if bus && !pp.take(port+10000) {
			continue
		}
		return port, nil
	}
	return 0, fmt.Errorf("no free port between %d and %d", lo, hi)
}

// Start brings everything up and returns once NATS has a JetStream meta
// leader, the Redis Cluster is ok on every node, and every aupd is ready.
// On an error it tears down what it started.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("nats-server"); err != nil {
		return nil, fmt.Errorf("nats-server not found (scripts/cluster installs Debian's): %w", err)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server not found (scripts/cluster installs it): %w", err)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	opts.Dir = dir
	unlock, err := lockMachine(ctx, opts.Log)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, unlock: unlock}
	if err := c.start(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	opts := c.opts
	dir := opts.Dir
	natsBin, _ := exec.LookPath("nats-server")
	redisBin, _ := exec.LookPath("redis-server")
	nRedis := opts.RedisMasters * (1 + opts.RedisReplicas)
	var pp portPicker
	var ports, redisPorts []int
	for range 3*opts.NATSNodes + opts.AupdProcesses + 1 {
		p, err := pp.pick(22000, 32000, false)
		if err != nil {
			pp.close()
			return err
		}
		ports = append(ports, p)
	}
	for range nRedis {
		p, err := pp.pick(10000, 22000, true)
		if err != nil {
			pp.close()
			return err
		}
		redisPorts = append(redisPorts, p)
	}
	pp.close()
	next := func() int { p := ports[0]; ports = ports[1:]; return p }
	var err error

	c.Bin = opts.AupdBinary
	if c.Bin == "" {
		fmt.Fprintln(opts.Log, "cluster: building aupd")
		bdir := filepath.Join(dir, "bin")
		if err := os.MkdirAll(bdir, 0o755); err != nil {
			return err
		}
		if c.Bin, err = BuildAupd(ctx, bdir); err != nil {
			return err
		}
	}

	// SMTP sink.
	if c.SMTP, err = NewSMTPSink(next()); err != nil {
		return err
	}
	if err := c.SMTP.SaveTo(filepath.Join(dir, "smtp")); err != nil {
		return err
	}

	// NATS.
	var routes []string
	for i := range opts.NATSNodes {
		ndir := filepath.Join(dir, fmt.Sprintf("nats%d", i))
		if err := os.MkdirAll(ndir, 0o755); err != nil {
			return err
		}
		n := &NATSNode{ServerName: fmt.Sprintf("n%d", i), Port: next(), ClusterPort: next(), HTTPPort: next(),
			Config: filepath.Join(ndir, "nats.conf")}
		n.Proc = newProc("nats "+n.ServerName, ndir, filepath.Join(ndir, "nats.log"), natsBin, "-c", n.Config)
		c.NATS = append(c.NATS, n)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", n.ClusterPort))
	}
	for _, n := range c.NATS {
		if err := natsConfig(n, n.dir, routes); err != nil {
			return err
		}
		if err := n.Start(); err != nil {
			return err
		}
	}
	for _, n := range c.NATS {
		if err := n.WaitHealthy(ctx, 60*time.Second); err != nil {
			return err
		}
	}
	if err := c.waitJetStream(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("nats cluster: jetstream: %w", err)
	}
	fmt.Fprintf(opts.Log, "cluster: NATS up (%d nodes) %s\n", len(c.NATS), c.NATSURLs())

	// Redis.
	for i := range nRedis {
		rdir := filepath.Join(dir, fmt.Sprintf("redis%d", i))
		if err := os.MkdirAll(rdir, 0o755); err != nil {
			return err
		}
		n := &RedisNode{Port: redisPorts[i]}
		n.Proc = newProc(fmt.Sprintf("redis r%d", i), rdir, filepath.Join(rdir, "redis.log"),
			redisArgs(redisBin, rdir, n.Port, int(opts.RedisNodeTimeout.Milliseconds()))...)
		c.Redis = append(c.Redis, n)
		if err := n.Start(); err != nil {
			return err
		}
	}
	for _, n := range c.Redis {
		if err := n.waitPing(ctx, 30*time.Second); err != nil {
			return err
		}
	}
	if err := c.formRedis(ctx, opts.RedisMasters); err != nil {
		return err
	}
	fmt.Fprintf(opts.Log, "cluster: Redis Cluster ok (%d masters, %d replicas each) %s\n", opts.RedisMasters, opts.RedisReplicas, strings.Join(c.RedisAddrs(), ","))

	// aupd.
	for i := range opts.AupdProcesses {
		adir := filepath.Join(dir, fmt.Sprintf("aupd%d", i))
		if err := os.MkdirAll(adir, 0o755); err != nil {
			return err
		}
		a := &Aupd{HTTPAddr: fmt.Sprintf("127.0.0.1:%d", next()), Config: filepath.Join(adir, "aupd.yml"), DataDir: adir}
		a.Proc = newProc(fmt.Sprintf("aupd a%d", i), adir, filepath.Join(adir, "aupd.log"), c.Bin, "-config", a.Config)
		if err := os.WriteFile(a.Config, []byte(c.aupdConfig(a, c.RedisAddrs())), 0o644); err != nil {
			return err
		}
		c.Aupd = append(c.Aupd, a)
	}
	if !opts.NoAupdStart {
		return c.StartAupd(ctx)
	}
	return nil
}

// StartAupd starts every aupd process that is not running, one after the
// other (the first creates the streams), and waits until each is ready.
func (c *Cluster) StartAupd(ctx context.Context) error {
	for _, a := range c.Aupd {
		if a.Running() {
			continue
		}
		if err := a.StartReady(ctx, 90*time.Second); err != nil {
			return err
		}
		fmt.Fprintf(c.opts.Log, "cluster: %s ready on http://%s\n", a.Name, a.HTTPAddr)
	}
	return nil
}

// Close tears everything down: aupd first (SIGTERM, so that batches in
// hand are finished), then NATS and Redis, then the SMTP sink. Data stays
// in the directory.
func (c *Cluster) Close() {
	for _, a := range c.Aupd {
		_ = a.Terminate(15 * time.Second)
	}
	for _, n := range c.NATS {
		_ = n.Terminate(10 * time.Second)
	}
	for _, n := range c.Redis {
		_ = n.Terminate(10 * time.Second)
	}
	if c.SMTP != nil {
		_ = c.SMTP.Close()
	}
	if c.unlock != nil {
		c.unlock()
		c.unlock = nil
	}
}

// Describe writes how to reach everything.
func (c *Cluster) Describe(w io.Writer) {
	fmt.Fprintf(w, "directory      %s\n", c.opts.Dir)
	fmt.Fprintf(w, "NATS           %s\n", c.NATSURLs())
	for _, n := range c.NATS {
		fmt.Fprintf(w, "  %-4s         nats://127.0.0.1:%d  monitor http://127.0.0.1:%d  config %s  pid %d\n", n.ServerName, n.Port, n.HTTPPort, n.Config, n.PID())
	}
	fmt.Fprintf(w, "Redis Cluster  %s\n", strings.Join(c.RedisAddrs(), ","))
	for i, n := range c.Redis {
		role := "master"
		if i >= c.opts.RedisMasters {
			role = "replica of " + c.Redis[(i-c.opts.RedisMasters)%c.opts.RedisMasters].Name
		}
		fmt.Fprintf(w, "  %-8s     %s  %s  pid %d  (redis-cli -c -p %d)\n", n.Name, n.Addr(), role, n.PID(), n.Port)
	}
	for _, a := range c.Aupd {
		fmt.Fprintf(w, "%-14s http://%s  config %s  log %s  pid %d\n", a.Name, a.HTTPAddr, a.Config, a.Log, a.PID())
	}
	fmt.Fprintf(w, "SMTP sink      %s (every message saved in %s)\n", c.SMTP.Addr, filepath.Join(c.opts.Dir, "smtp"))
}
