package jobs

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// runUntilStarted runs a Runner of job until the job has started, and
// returns what ends the run and a channel closed when Run has returned.
func runUntilStarted(t *testing.T, job Job, opts Options, started <-chan struct{}) (stop func(), done <-chan struct{}) {
	t.Helper()
	r, err := New(opts, []Job{job})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ended := make(chan struct{})
	go func() { _ = r.Run(ctx); close(ended) }()
	<-started
	return cancel, ended
}

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
		stop, done := runUntilStarted(t, job, Options{Timeout: time.Hour}, started)
		begin := time.Now()
		stop()
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
		stop, done := runUntilStarted(t, job, Options{Timeout: time.Hour, StopWait: 3 * time.Second}, started)
		begin := time.Now()
		stop()
		<-done
		if d := time.Since(begin); d != 3*time.Second {
			t.Errorf("Run returned %s after shutdown began, want the 3s StopWait", d)
		}
		close(release)
		synctest.Wait()
	})
}
