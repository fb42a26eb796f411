package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// Standalone is a Redis outside the Cluster, with its replicas, and an
// aupd process configured to count in it: what the Cluster costs is
// measured against it (aupload scale's standalone phase).
type Standalone struct {
	Redis []*RedisNode // the master, then its replicas
	Aupd  *Aupd
}

// StartStandalone starts, beside the cluster, a standalone redis-server
// (cluster mode off, with the Cluster nodes' persistence and memory
// settings) and replicas replicas of it, and waits until every replica's
// link is up. It configures, but does not start, an aupd process with
// the cluster's aupd settings (the same NATS, the same wait_replicas)
// and the standalone Redis as redis.addrs. Everything lives under
// Dir/standalone. The caller closes it: Cluster.Close does not.
func (c *Cluster) StartStandalone(ctx context.Context, replicas int) (*Standalone, error) {
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("standalone redis: %w", err)
	}
	var pp portPicker
	ports := make([]int, 0, replicas+2)
	for i := range replicas + 2 { // the Redis nodes, then aupd's HTTP
		lo, hi := 10000, 22000
		if i == replicas+1 {
			lo, hi = 22000, 32000
		}
		p, err := pp.pick(lo, hi, false)
		if err != nil {
			pp.close()
			return nil, err
		}
		ports = append(ports, p)
	}
	pp.close()
	s := &Standalone{}
	if err := s.startRedis(ctx, filepath.Join(c.opts.Dir, "standalone"), redisBin, ports[:replicas+1]); err != nil {
		s.Close()
		return nil, err
	}
	adir := filepath.Join(c.opts.Dir, "standalone", "aupd")
	if err := os.MkdirAll(adir, 0o755); err != nil {
		s.Close()
		return nil, err
	}
	a := &Aupd{HTTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[replicas+1]), Config: filepath.Join(adir, "aupd.yml"), DataDir: adir}
	a.Proc = newProc("aupd sa", adir, filepath.Join(adir, "aupd.log"), c.Bin, "-config", a.Config)
	if err := os.WriteFile(a.Config, []byte(c.aupdConfig(a, []string{s.Redis[0].Addr()})), 0o644); err != nil {
		s.Close()
		return nil, err
	}
	s.Aupd = a
	fmt.Fprintf(c.opts.Log, "cluster: standalone Redis up (%d replicas) %s\n", replicas, s.Redis[0].Addr())
	return s, nil
}

// startRedis starts the master on ports[0] and a replica of it on each
// other port, and waits until the replicas' links are up.
func (s *Standalone) startRedis(ctx context.Context, dir, bin string, ports []int) error {
	for i, port := range ports {
		rdir := filepath.Join(dir, fmt.Sprintf("redis%d", i))
		if err := os.MkdirAll(rdir, 0o755); err != nil {
			return err
		}
		args := nodeArgs(bin, rdir, port)
		if i > 0 {
			args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(ports[0]))
		}
		n := &RedisNode{Port: port, Proc: newProc(fmt.Sprintf("redis s%d", i), rdir, filepath.Join(rdir, "redis.log"), args...)}
		s.Redis = append(s.Redis, n)
		if err := n.Start(); err != nil {
			return err
		}
		if err := n.waitPing(ctx, 30*time.Second); err != nil {
			return err
		}
	}
	for _, n := range s.Redis[1:] {
		err := poll(ctx, 60*time.Second, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
			role, link, err := n.Role(ctx)
			if err != nil {
				return false, err
			}
			return role == "slave" && link == "up", fmt.Errorf("role %s, link %s", role, link)
		})
		if err != nil {
			return fmt.Errorf("redis %s: replica of %s: %w", n.Name, s.Redis[0].Name, err)
		}
	}
	return nil
}

// Close terminates the aupd process (SIGTERM, so that it finishes the
// batches in hand), then the Redis nodes. Data stays in the directory.
func (s *Standalone) Close() {
	if s.Aupd != nil {
		_ = s.Aupd.Terminate(15 * time.Second)
	}
	for _, n := range s.Redis {
		_ = n.Terminate(10 * time.Second)
	}
}
