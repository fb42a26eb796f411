package app

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/oklog/run"
)

// TestShutdownActorEndsTheGroup: the end of the run context ends the run
// group through its own actor, whatever the other actors watch, and the
// actors added with addContext see their contexts cancelled.
func TestShutdownActorEndsTheGroup(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	var g run.Group
	addShutdown(ctx, &g, slog.New(slog.DiscardHandler))
	stop := make(chan struct{})
	g.Add(func() error { <-stop; return nil }, func(error) { close(stop) }) // watches no context
	saw := make(chan error, 1)
	addContext(ctx, &g, func(actx context.Context) error { <-actx.Done(); saw <- actx.Err(); return nil })
	var td teardown
	var order []int
	td.add(func() { order = append(order, 1) })
	td.add(func() { order = append(order, 2) })

	done := make(chan error, 1)
	go func() { done <- g.Run() }()
	cancel(errors.New("SIGTERM"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-saw; !errors.Is(err, context.Canceled) {
		t.Errorf("actor's context: %v", err)
	}
	td.run()
	if len(order) != 2 || order[0] != 2 || order[1] != 1 {
		t.Errorf("teardown ran %v, want last taken first [2 1]", order)
	}
}
