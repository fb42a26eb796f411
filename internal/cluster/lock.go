package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lockMachine takes the machine-wide lock that lets one cluster run at a
// time: three NATS nodes, six Redis nodes and the aupd processes of two
// clusters on a small machine starve each other, and a Redis node starved
// past cluster-node-timeout is failed over for nothing. go test runs
// packages in parallel processes, so the lock is a file lock. It waits,
// saying so once, until the other cluster is closed or ctx ends.
func lockMachine(ctx context.Context, log io.Writer) (func(), error) {
	path := filepath.Join(os.TempDir(), "aupd-cluster.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("cluster lock: %w", err)
	}
	said := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("cluster lock %s: %w", path, err)
		}
		if !said {
			fmt.Fprintf(log, "waiting for another cluster on this machine to end (%s)\n", path)
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("cluster lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
