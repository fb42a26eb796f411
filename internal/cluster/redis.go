package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisNode is one redis-server of the Redis Cluster.
type RedisNode struct {
	*Proc
	Port int
	ID   string // the cluster node id (CLUSTER MYID)
}

// Addr is the node's address.
func (n *RedisNode) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port)) }

// client is a plain (non-cluster) client of this node alone.
func (n *RedisNode) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.Addr(), Protocol: 2, DialTimeout: time.Second, ReadTimeout: 2 * time.Second,
		MaxRetries: -1, PoolSize: 1})
}

// Do runs one command on this node alone.
func (n *RedisNode) Do(ctx context.Context, args ...any) (any, error) {
	c := n.client()
	defer c.Close()
	return c.Do(ctx, args...).Result()
}

func (n *RedisNode) info(ctx context.Context, section string) (map[string]string, error) {
	c := n.client()
	defer c.Close()
	var s string
	var err error
	if section == "cluster" {
		s, err = c.ClusterInfo(ctx).Result()
	} else {
		s, err = c.Info(ctx, section).Result()
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for line := range strings.Lines(s) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// Role is "master" or "slave" as the node itself says (INFO replication),
// with its replication link state when it is a replica.
func (n *RedisNode) Role(ctx context.Context) (role, link string, err error) {
	m, err := n.info(ctx, "replication")
	if err != nil {
		return "", "", err
	}
	return m["role"], m["master_link_status"], nil
}

// RedisAddrs is every node's address (for redis.addrs).
func (c *Cluster) RedisAddrs() []string {
	out := make([]string, len(c.Redis))
	for i, n := range c.Redis {
		out[i] = n.Addr()
	}
	return out
}

// NewRedisClient is a Cluster client of the whole Redis Cluster.
func (c *Cluster) NewRedisClient() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.RedisAddrs(), Protocol: 2, MaxRedirects: 16,
		DialTimeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second})
}

// redisArgs is how a node runs. cluster-require-full-coverage no, as
// docs/redis.md recommends: with a shard down (master and replicas) the
// other masters go on serving their own slots instead of answering
// CLUSTERDOWN to everything.
func redisArgs(bin, dir string, port, nodeTimeout int) []string {
	return append(nodeArgs(bin, dir, port), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(nodeTimeout), "--cluster-require-full-coverage", "no")
}

// nodeArgs are the settings of every Redis node, in the Cluster or not:
// the persistence (AOF everysec, no snapshots) and the memory policy.
func nodeArgs(bin, dir string, port int) []string {
	return []string{bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
		"--maxmemory-policy", "noeviction", "--daemonize", "no", "--protected-mode", "no",
		"--logfile", ""}
}

// waitPing waits until the node answers PING (it has loaded its data).
func (n *RedisNode) waitPing(ctx context.Context, timeout time.Duration) error {
	err := poll(ctx, timeout, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		if err := n.exitedErr(); err != nil {
			return false, err
		}
		_, err := n.Do(ctx, "PING")
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("redis %s: %w (log %s)", n.Name, err, n.Log)
	}
	return nil
}

// formRedis makes a Redis Cluster of fresh nodes: the first masters nodes
// share the 16384 slots, the others replicate them in turn.
func (c *Cluster) formRedis(ctx context.Context, masters int) error {
	for i, n := range c.Redis {
		id, err := n.Do(ctx, "CLUSTER", "MYID")
		if err != nil {
			return fmt.Errorf("redis %s: cluster myid: %w", n.Name, err)
		}
		n.ID = fmt.Sprint(id)
		// Distinct epochs from the start, as redis-cli --cluster create
		// does, so that no epoch collision needs resolving.
		if _, err := n.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1); err != nil {
			return fmt.Errorf("redis %s: set-config-epoch: %w", n.Name, err)
		}
	}
	for i := range masters {
		lo := i * 16384 / masters
		hi := (i+1)*16384/masters - 1
		if _, err := c.Redis[i].Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi); err != nil {
			return fmt.Errorf("redis %s: addslotsrange: %w", c.Redis[i].Name, err)
		}
	}
	for _, n := range c.Redis[1:] {
		if _, err := c.Redis[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", n.Port); err != nil {
			return fmt.Errorf("redis meet %s: %w", n.Name, err)
		}
	}
	// Every node must know every other before a replica can name its
	// master.
	err := poll(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		for _, n := range c.Redis {
			out, err := n.Do(ctx, "CLUSTER", "NODES")
			if err != nil {
				return false, err
			}
			s := fmt.Sprint(out)
			if strings.Count(s, "\n") < len(c.Redis) || strings.Contains(s, "handshake") || strings.Contains(s, "noaddr") {
				return false, fmt.Errorf("%s does not know every node yet", n.Name)
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("redis cluster meet: %w", err)
	}
	for i, n := range c.Redis[masters:] {
		m := c.Redis[i%masters]
		if _, err := n.Do(ctx, "CLUSTER", "REPLICATE", m.ID); err != nil {
			return fmt.Errorf("redis %s: replicate %s: %w", n.Name, m.Name, err)
		}
	}
	return c.WaitRedisOK(ctx, 60*time.Second)
}

// WaitRedisOK waits until every running node says cluster_state:ok, every
// slot is served, and every replica's link to its master is up.
func (c *Cluster) WaitRedisOK(ctx context.Context, timeout time.Duration) error {
	err := poll(ctx, timeout, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		for _, n := range c.Redis {
			if !n.Running() {
				continue
			}
			m, err := n.info(ctx, "cluster")
			if err != nil {
				return false, fmt.Errorf("%s: %w", n.Name, err)
			}
			if m["cluster_state"] != "ok" || m["cluster_slots_ok"] != "16384" {
				return false, fmt.Errorf("%s: cluster_state %s, slots ok %s", n.Name, m["cluster_state"], m["cluster_slots_ok"])
			}
			role, link, err := n.Role(ctx)
			if err != nil {
				return false, err
			}
			if role == "slave" && link != "up" {
				return false, fmt.Errorf("%s: replica link %s", n.Name, link)
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("redis cluster not ok: %w", err)
	}
	return nil
}

// SlotOf is the Redis Cluster slot of a key (its hash tag if any).
func SlotOf(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc % 16384)
}

// RedisNodeOnPort returns the node listening on port, or nil.
func (c *Cluster) RedisNodeOnPort(port int) *RedisNode {
	for _, n := range c.Redis {
		if n.Port == port {
			return n
		}
	}
	return nil
}

// MasterOf returns the node that serves slot now, as the running nodes
// see it (CLUSTER SLOTS of the first that answers).
func (c *Cluster) MasterOf(ctx context.Context, slot int) (*RedisNode, error) {
	var last error
	for _, n := range c.Redis {
		if !n.Running() {
			continue
		}
		cl := n.client()
		//nolint:staticcheck // CLUSTER SLOTS answers on every Redis the harness runs (7.0 and later); SHARDS would say the same at more cost
		slots, err := cl.ClusterSlots(ctx).Result()
		cl.Close()
		if err != nil {
			last = err
			continue
		}
		for _, s := range slots {
			if slot >= int(s.Start) && slot <= int(s.End) && len(s.Nodes) > 0 {
				_, p, _ := net.SplitHostPort(s.Nodes[0].Addr)
				port, _ := strconv.Atoi(p)
				if m := c.RedisNodeOnPort(port); m != nil {
					return m, nil
				}
				return nil, fmt.Errorf("slot %d served by %s, not a node of this cluster", slot, s.Nodes[0].Addr)
			}
		}
		return nil, fmt.Errorf("slot %d is not served", slot)
	}
	if last == nil {
		last = errors.New("no redis node runs")
	}
	return nil, last
}

// Failover is what FailoverMaster saw.
type Failover struct {
	Old, New *RedisNode
	// Promoted is how long from the kill until the replica served the
	// slot and the cluster was ok again; Rejoined until the old master was
	// back as a replica with its link up.
	Promoted, Rejoined time.Duration
}

// FailoverMaster SIGKILLs the master serving slot, waits until its
// replica has taken over and the cluster is ok, keeps the old master down
// for down more, then restarts it and waits until it has rejoined as a
// replica of the new master.
func (c *Cluster) FailoverMaster(ctx context.Context, slot int, down time.Duration) (Failover, error) {
	start := time.Now()
	f, err := c.KillMaster(ctx, slot)
	if err != nil {
		return f, err
	}
	select {
	case <-ctx.Done():
		return f, ctx.Err()
	case <-time.After(down):
	}
	if err := c.Rejoin(ctx, f.Old); err != nil {
		return f, err
	}
	f.Rejoined = time.Since(start)
	return f, nil
}

// KillMaster SIGKILLs the master serving slot and waits until its replica
// has taken over and the cluster is ok. The old master stays down (Rejoin
// brings it back), so the new master has no replica meanwhile.
func (c *Cluster) KillMaster(ctx context.Context, slot int) (Failover, error) {
	var f Failover
	old, err := c.MasterOf(ctx, slot)
	if err != nil {
		return f, err
	}
	f.Old = old
	start := time.Now()
	if err := old.Kill(); err != nil {
		return f, err
	}
	err = poll(ctx, 60*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		m, err := c.MasterOf(ctx, slot)
		if err != nil {
			return false, err
		}
		if m == old {
			return false, fmt.Errorf("slot %d still served by the killed %s", slot, old.Name)
		}
		f.New = m
		return true, nil
	})
	if err != nil {
		return f, fmt.Errorf("failover of %s: %w", old.Name, err)
	}
	if err := c.WaitRedisOK(ctx, 60*time.Second); err != nil {
		return f, err
	}
	f.Promoted = time.Since(start)
	return f, nil
}

// Rejoin restarts a master KillMaster killed and waits until it has
// rejoined as a replica with its link up and the cluster is ok.
func (c *Cluster) Rejoin(ctx context.Context, old *RedisNode) error {
	if err := old.Start(); err != nil {
		return err
	}
	if err := old.waitPing(ctx, 60*time.Second); err != nil {
		return err
	}
	err := poll(ctx, 60*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		role, link, err := old.Role(ctx)
		if err != nil {
			return false, err
		}
		return role == "slave" && link == "up", fmt.Errorf("%s: role %s, link %s", old.Name, role, link)
	})
	if err != nil {
		return fmt.Errorf("rejoin of %s: %w", old.Name, err)
	}
	return c.WaitRedisOK(ctx, 60*time.Second)
}

// StopShard SIGKILLs the master serving slot and its replicas, replicas
// first so that none is promoted, and waits until the other masters see
// the master failed and still serve their own slots (with
// cluster-require-full-coverage no). It returns the shard's nodes, for
// StartShard.
func (c *Cluster) StopShard(ctx context.Context, slot int) ([]*RedisNode, error) {
	m, err := c.MasterOf(ctx, slot)
	if err != nil {
		return nil, err
	}
	replicas, err := c.replicasOf(ctx, m)
	if err != nil {
		return nil, err
	}
	for _, n := range replicas {
		if err := n.Kill(); err != nil {
			return nil, err
		}
	}
	if err := m.Kill(); err != nil {
		return nil, err
	}
	err = poll(ctx, 60*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		for _, n := range c.Redis {
			if !n.Running() {
				continue
			}
			out, err := n.Do(ctx, "CLUSTER", "NODES")
			if err != nil {
				return false, err
			}
			f := strings.Fields(lineOf(fmt.Sprint(out), m.ID))
			if len(f) < 3 || !slices.Contains(strings.Split(f[2], ","), "fail") {
				return false, fmt.Errorf("%s does not see %s failed yet", n.Name, m.Name)
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return append([]*RedisNode{m}, replicas...), nil
}

// StartShard restarts the nodes StopShard stopped and waits until the
// cluster is ok with every slot served.
func (c *Cluster) StartShard(ctx context.Context, nodes []*RedisNode) error {
	for _, n := range nodes {
		if err := n.Start(); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		if err := n.waitPing(ctx, 60*time.Second); err != nil {
			return err
		}
	}
	return c.WaitRedisOK(ctx, 60*time.Second)
}

// replicasOf are the nodes that replicate m, as CLUSTER NODES says.
func (c *Cluster) replicasOf(ctx context.Context, m *RedisNode) ([]*RedisNode, error) {
	out, err := m.Do(ctx, "CLUSTER", "REPLICAS", m.ID)
	if err != nil {
		return nil, fmt.Errorf("redis %s: cluster replicas: %w", m.Name, err)
	}
	lines, _ := out.([]any)
	var rs []*RedisNode
	for _, l := range lines {
		f := strings.Fields(fmt.Sprint(l))
		for _, n := range c.Redis {
			if len(f) > 0 && f[0] == n.ID {
				rs = append(rs, n)
			}
		}
	}
	return rs, nil
}

// lineOf is the line of CLUSTER NODES output that starts with id.
func lineOf(nodes, id string) string {
	for line := range strings.Lines(nodes) {
		if strings.HasPrefix(line, id) {
			return line
		}
	}
	return ""
}
