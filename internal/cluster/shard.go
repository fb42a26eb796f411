package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// The faults that last: a master lost until the caller brings it back,
// and a shard (a master and its replicas) down for a while. FailoverMaster
// is the short form of the first.

// LoseMaster SIGKILLs the master serving slot and waits until its replica
// serves the slot and the cluster is ok (Promoted). The old master stays
// down until Rejoin: with one replica per master, the promoted master
// has none meanwhile.
func (c *Cluster) LoseMaster(ctx context.Context, slot int) (Failover, error) {
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
		f.New = m
		return m != old, fmt.Errorf("slot %d still served by the killed %s", slot, old.Name)
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

// Rejoin restarts a master that LoseMaster took down and waits until it
// is a replica again with its link up and the cluster ok.
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

// ReplicasOf returns the nodes that replicate master, as master's CLUSTER
// NODES says (a replica that is down is listed too).
func (c *Cluster) ReplicasOf(ctx context.Context, master *RedisNode) ([]*RedisNode, error) {
	out, err := master.Do(ctx, "CLUSTER", "NODES")
	if err != nil {
		return nil, fmt.Errorf("redis %s: cluster nodes: %w", master.Name, err)
	}
	var reps []*RedisNode
	for line := range strings.Lines(fmt.Sprint(out)) {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != master.ID {
			continue
		}
		for _, n := range c.Redis {
			if n.ID == f[0] {
				reps = append(reps, n)
			}
		}
	}
	return reps, nil
}

// ShardOutage is what ShardDown saw.
type ShardOutage struct {
	Master   *RedisNode
	Replicas []*RedisNode
	// Back is how long from the kill until the shard's nodes were
	// restarted and the cluster was ok again.
	Back time.Duration
}

// ShardDown takes a whole shard down: it SIGKILLs the master serving
// slot and every replica of it (the replicas first, so that none is
// promoted), keeps them down for down, restarts them and waits until
// the cluster is ok.
func (c *Cluster) ShardDown(ctx context.Context, slot int, down time.Duration) (ShardOutage, error) {
	var s ShardOutage
	m, err := c.MasterOf(ctx, slot)
	if err != nil {
		return s, err
	}
	s.Master = m
	if s.Replicas, err = c.ReplicasOf(ctx, m); err != nil {
		return s, err
	}
	start := time.Now()
	nodes := append(append([]*RedisNode(nil), s.Replicas...), m)
	for _, n := range nodes {
		if err := n.Kill(); err != nil {
			return s, err
		}
	}
	if err := Sleep(ctx, down); err != nil {
		return s, err
	}
	// The master first, so that a replica back before it finds no reason
	// to take over.
	for i := len(nodes) - 1; i >= 0; i-- {
		if err := nodes[i].Start(); err != nil {
			return s, err
		}
	}
	for _, n := range nodes {
		if err := n.waitPing(ctx, 60*time.Second); err != nil {
			return s, err
		}
	}
	if err := c.WaitRedisOK(ctx, 60*time.Second); err != nil {
		return s, err
	}
	s.Back = time.Since(start)
	return s, nil
}
