package cluster

import (
	"context"
	"time"
)

// ShardOutage is what ShardDown saw.
type ShardOutage struct {
	Master   *RedisNode
	Replicas []*RedisNode
	// Back is how long from the kill until the shard's nodes were
	// restarted and the cluster was ok again.
	Back time.Duration
}

// ShardDown takes a whole shard down for down (StopShard), then brings it
// back (StartShard).
func (c *Cluster) ShardDown(ctx context.Context, slot int, down time.Duration) (ShardOutage, error) {
	var s ShardOutage
	start := time.Now()
	nodes, err := c.StopShard(ctx, slot)
	if err != nil {
		return s, err
	}
	s.Master, s.Replicas = nodes[0], nodes[1:]
	if err := Sleep(ctx, down-time.Since(start)); err != nil {
		return s, err
	}
	if err := c.StartShard(ctx, nodes); err != nil {
		return s, err
	}
	s.Back = time.Since(start)
	return s, nil
}
