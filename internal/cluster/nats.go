package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSNode is one nats-server of the JetStream cluster.
type NATSNode struct {
	*Proc
	ServerName  string // server_name, as JetStream names stream leaders
	Port        int    // client port
	ClusterPort int    // route port
	HTTPPort    int    // monitoring port (/healthz)
	Config      string // its config file
}

// URL is the node's client URL.
func (n *NATSNode) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// natsConfig writes the config file of node i of the cluster.
func natsConfig(n *NATSNode, dir string, routes []string) error {
	text := fmt.Sprintf(`# written by internal/cluster
server_name: %s
host: 127.0.0.1
port: %d
http: "127.0.0.1:%d"
max_payload: 8MB
jetstream {
  store_dir: %q
  max_memory_store: 256MB
}
cluster {
  name: aupd-cluster
  host: 127.0.0.1
  port: %d
  routes: [
    %s
  ]
}
`, n.ServerName, n.Port, n.HTTPPort, filepath.Join(dir, "jetstream"), n.ClusterPort, strings.Join(routes, "\n    "))
	return os.WriteFile(n.Config, []byte(text), 0o644)
}

// WaitHealthy waits until the node's /healthz answers 200 (JetStream up
// and current).
func (n *NATSNode) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", n.HTTPPort)
	err := waitHTTP(ctx, timeout, url, n.exitedErr)
	if err != nil {
		return fmt.Errorf("nats %s: %w (log %s)", n.ServerName, err, n.Log)
	}
	return nil
}

// NATSURLs is every node's client URL, comma-separated (as nats.url takes
// them).
func (c *Cluster) NATSURLs() string {
	urls := make([]string, len(c.NATS))
	for i, n := range c.NATS {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// ConnectNATS connects to the NATS cluster (any node, reconnecting to the
// others forever).
func (c *Cluster) ConnectNATS(name string) (*nats.Conn, error) {
	return nats.Connect(c.NATSURLs(), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectBufSize(64<<20), nats.RetryOnFailedConnect(true))
}

// waitJetStream waits until the cluster's JetStream has a meta leader: an
// account info request answers.
func (c *Cluster) waitJetStream(ctx context.Context, timeout time.Duration) error {
	nc, err := c.ConnectNATS("cluster-probe")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	return poll(ctx, timeout, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(rctx)
		return err == nil, err
	})
}

// NATSNodeNamed returns the node with the server name, or nil.
func (c *Cluster) NATSNodeNamed(name string) *NATSNode {
	for _, n := range c.NATS {
		if n.ServerName == name {
			return n
		}
	}
	return nil
}

// StreamLeader returns the node that leads the stream now.
func (c *Cluster) StreamLeader(ctx context.Context, js jetstream.JetStream, stream string) (*NATSNode, error) {
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := js.Stream(rctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(rctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", stream, err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return nil, fmt.Errorf("stream %s has no leader now", stream)
	}
	n := c.NATSNodeNamed(info.Cluster.Leader)
	if n == nil {
		return nil, fmt.Errorf("stream %s: leader %q is not a node of this cluster", stream, info.Cluster.Leader)
	}
	return n, nil
}

// WaitStreamLeader waits until the stream has a leader other than not
// (nil: any leader) and returns it.
func (c *Cluster) WaitStreamLeader(ctx context.Context, js jetstream.JetStream, stream string, not *NATSNode, timeout time.Duration) (*NATSNode, error) {
	var leader *NATSNode
	err := poll(ctx, timeout, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		n, err := c.StreamLeader(ctx, js, stream)
		if err != nil {
			return false, err
		}
		if n == not {
			return false, fmt.Errorf("stream %s still led by %s", stream, n.ServerName)
		}
		leader = n
		return true, nil
	})
	return leader, err
}

// WaitStreamCurrent waits until every replica of the stream is current
// (none offline or lagging), as after a node rejoined.
func (c *Cluster) WaitStreamCurrent(ctx context.Context, js jetstream.JetStream, stream string, timeout time.Duration) error {
	return poll(ctx, timeout, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		s, err := js.Stream(rctx, stream)
		if err != nil {
			return false, err
		}
		info, err := s.Info(rctx)
		if err != nil {
			return false, err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return false, errors.New("no leader")
		}
		for _, p := range info.Cluster.Replicas {
			if !p.Current || p.Offline {
				return false, fmt.Errorf("replica %s not current (lag %d)", p.Name, p.Lag)
			}
		}
		return len(info.Cluster.Replicas) == info.Config.Replicas-1, fmt.Errorf("%d replicas besides the leader", len(info.Cluster.Replicas))
	})
}
