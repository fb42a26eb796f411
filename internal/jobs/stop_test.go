package jobs

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// TestShutdownCancelsRunningJobs: at shutdown a running job's context is
// cancelled and Run returns once it has returned, not after jobs.timeout.
func TestShutdownCancelsRunningJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		started, saw := make(chan struct{}), make(chan error, 1)
		job := Job{Name: "long", Schedule: "@every 1m", Local: true, Run: func(ctx context.Context, _ time.Time) error {
			close(started)
			<-ctx.Done()
			saw <- ctx.Err()
			return ctx.Err()
		}}
		r, err := New(Options{Timeout: time.Hour}, []Job{job})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { _ = r.Run(ctx); close(done) }()
		<-started
		begin := time.Now()
		cancel()
		<-done
		if err := <-saw; !errors.Is(err, context.Canceled) {
			t.Fatalf("the job saw %v, want context.Canceled", err)
		}
		if d := time.Since(begin); d != 0 {
			t.Errorf("Run returned %s after shutdown began, want at once", d)
		}
	})
}

// TestShutdownDoesNotWaitForAStuckJob: a job that ignores its context
// holds shutdown back StopWait at most.
func TestShutdownDoesNotWaitForAStuckJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		started, release := make(chan struct{}), make(chan struct{})
		job := Job{Name: "stuck", Schedule: "@every 1m", Local: true, Run: func(context.Context, time.Time) error {
			close(started)
			<-release
			return nil
		}}
		r, err := New(Options{Timeout: time.Hour, StopWait: 3 * time.Second}, []Job{job})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { _ = r.Run(ctx); close(done) }()
		<-started
		begin := time.Now()
		cancel()
		<-done
		if d := time.Since(begin); d != 3*time.Second {
			t.Errorf("Run returned %s after shutdown began, want the 3s StopWait", d)
		}
		close(release)
		synctest.Wait()
	})
}
