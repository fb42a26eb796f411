package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Aupd is one aupd process of the cluster.
type Aupd struct {
	*Proc
	HTTPAddr string // its HTTP listener (/metrics, /readyz, the API)
	Config   string // its config file
	DataDir  string
}

// AupdSettings are the aupd settings the cluster writes into every
// process's config file.
type AupdSettings struct {
	Threshold  int           // aup.threshold (default 50)
	MaxTracked int           // aup.max_tracked (default 0: threshold + 1)
	Replicas   int           // replicas of the three streams (default 3)
	AckWait    time.Duration // nats.consumer.ack_wait (default 30s)
	Batch      int           // nats.consumer.batch (default 500)
	Workers    int           // nats.consumer.workers (default 4)
	RetryMin   time.Duration // nats.consumer.retry_min (default 1s)
	RetryMax   time.Duration // nats.consumer.retry_max (default 1m)
	// Notices: the notifier's retry backoff and ack wait (defaults 30s,
	// 30m, 2m).
	NoticeRetryMin, NoticeRetryMax, NoticeAckWait time.Duration
	// WaitReplicas is redis.wait_replicas: how many replicas of each
	// master must hold a write before aupd acknowledges what it caused.
	WaitReplicas int
	// RedisExtra is more YAML under redis: (for example
	// "wait_timeout: 2s"), one key per line.
	RedisExtra []string
	LogLevel   string // log.level (default info)
}

func (s *AupdSettings) defaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defD := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&s.Threshold, 50)
	def(&s.Replicas, 3)
	def(&s.Batch, 500)
	def(&s.Workers, 4)
	defD(&s.AckWait, 30*time.Second)
	defD(&s.RetryMin, time.Second)
	defD(&s.RetryMax, time.Minute)
	defD(&s.NoticeRetryMin, 30*time.Second)
	defD(&s.NoticeRetryMax, 30*time.Minute)
	defD(&s.NoticeAckWait, 2*time.Minute)
	if s.LogLevel == "" {
		s.LogLevel = "info"
	}
}

// Companies of the cluster's config: the domains its accounts are in.
var Companies = []struct{ ID, Domain, Abuse string }{
	{"acme", "example.com", "abuse@example.com"},
	{"globex", "globex.test", "abuse@globex.test"},
}

// aupdConfig is a's config file, with redisAddrs as redis.addrs.
func (c *Cluster) aupdConfig(a *Aupd, redisAddrs []string) string {
	s := c.opts.Aupd
	var b strings.Builder
	fmt.Fprintf(&b, "# written by internal/cluster\ndata_dir: %q\nlog: {level: %s, format: text}\nhttp: {listen: %q}\n", a.DataDir, s.LogLevel, a.HTTPAddr)
	fmt.Fprintf(&b, "nats:\n  url: %q\n", c.NATSURLs())
	for _, st := range []string{"verdict_stream", "account_stream", "dead_letter_stream"} {
		fmt.Fprintf(&b, "  %s: {replicas: %d}\n", st, s.Replicas)
	}
	fmt.Fprintf(&b, "  consumer: {batch: %d, workers: %d, ack_wait: %s, max_ack_pending: %d, retry_min: %s, retry_max: %s}\n",
		s.Batch, s.Workers, s.AckWait, max(20000, s.Batch*s.Workers), s.RetryMin, s.RetryMax)
	fmt.Fprintf(&b, "redis:\n  addrs: [%s]\n  prefix: aup\n  wait_replicas: %d\n", quoteAll(redisAddrs), s.WaitReplicas)
	for _, l := range s.RedisExtra {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	fmt.Fprintf(&b, "aup: {threshold: %d, max_tracked: %d}\n", s.Threshold, s.MaxTracked)
	host, port := splitHostPort(c.SMTP.Addr)
	fmt.Fprintf(&b, `notifier:
  smtp: {host: %s, port: %s, tls: none, timeout: 10s}
  from: "AUP Desk <aup-desk@provider.test>"
  fallback_abuse_contact: abuse@provider.test
  retry_min: %s
  retry_max: %s
  ack_wait: %s
policy: {postfix: {listen: ""}, dovecot: {listen: ""}}
companies:
`, host, port, s.NoticeRetryMin, s.NoticeRetryMax, s.NoticeAckWait)
	for _, co := range Companies {
		fmt.Fprintf(&b, "  - {id: %s, domains: [%s], abuse_contact: %s}\n", co.ID, co.Domain, co.Abuse)
	}
	return b.String()
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func splitHostPort(addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}

// WaitReady waits until the process's /readyz answers 200: it reached
// Redis and NATS and consumes.
func (a *Aupd) WaitReady(ctx context.Context, timeout time.Duration) error {
	url := "http://" + a.HTTPAddr + "/readyz"
	err := waitHTTP(ctx, timeout, url, a.exitedErr)
	if err != nil {
		return fmt.Errorf("aupd %s: %w (log %s)", a.Name, err, a.Log)
	}
	return nil
}

// StartReady starts the process and waits until it is ready.
func (a *Aupd) StartReady(ctx context.Context, timeout time.Duration) error {
	if err := a.Start(); err != nil {
		return err
	}
	return a.WaitReady(ctx, timeout)
}

// BuildAupd builds the aupd binary into dir and returns its path. It must
// run inside the product module (a test of it) or the harness's module
// in tools/ (go -C tools run ./cmd/aupload, or a test there), which
// replaces the product with this checkout. The build runs in the
// product module's directory, so that the aupd it gives is the one the
// product's own go.mod selects, whatever the harness's module requires.
func BuildAupd(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/aupd/aupd").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("find the aupd module: go list: %w\n%s", err, ee.Stderr)
		}
		return "", fmt.Errorf("find the aupd module: go list: %w", err)
	}
	root := strings.TrimSpace(string(out))
	if root == "" {
		return "", fmt.Errorf("find the aupd module: go list gave no directory")
	}
	bin, err := filepath.Abs(filepath.Join(dir, "aupd"))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/aupd")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build aupd: %w\n%s", err, out)
	}
	return bin, nil
}

// ReconfigureAupd changes the settings of every aupd process: it stops
// each (SIGTERM), rewrites its config file, and starts it again once all
// are stopped, waiting until each is ready.
func (c *Cluster) ReconfigureAupd(ctx context.Context, change func(*AupdSettings)) error {
	change(&c.opts.Aupd)
	for _, a := range c.Aupd {
		if err := a.Terminate(15 * time.Second); err != nil {
			return err
		}
		if err := os.WriteFile(a.Config, []byte(c.aupdConfig(a, c.RedisAddrs())), 0o644); err != nil {
			return err
		}
	}
	return c.StartAupd(ctx)
}
