package app

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/config"
)

// TestClusterClientReloadsSlotsSoon holds the Cluster client's slot map
// reload interval: go-redis's default (a minute) left every command for a
// dead master's slots dialling its address long after its replica had
// taken over (the fault campaign, docs/scaling.md).
func TestClusterClientReloadsSlotsSoon(t *testing.T) {
	rdb, err := newRedis(config.Redis{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("several addresses give a %T, not a Cluster client", rdb)
	}
	if got := cc.Options().ClusterStateReloadInterval; got != clusterReloadInterval || got > 5e9 {
		t.Fatalf("slot map reload interval %s, want %s", got, clusterReloadInterval)
	}
	one, err := newRedis(config.Redis{Addrs: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if _, ok := one.(*redis.Client); !ok {
		t.Fatalf("one address gives a %T, not a plain client", one)
	}
}
