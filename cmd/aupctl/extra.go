package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/buildinfo"
)

// readyPoll is how often ready --wait asks /readyz again.
const readyPoll = 250 * time.Millisecond

// readyAnswer is one answer of GET /readyz, or why there was none.
type readyAnswer struct {
	status int
	body   []byte
	checks map[string]string
	err    error
}

// readyCmd asks GET /readyz, which needs no token. With --wait it asks
// again until aupd is ready or the wait is over, saying on stderr what
// aupd waits for each time that changes; then it ends as a single ask
// would with the last answer: 0 ready, 6 not ready, 1 no answer.
func readyCmd(ctx context.Context, x *cli, _ []string, f *flags) error {
	if *f.wait < 0 {
		return &usageError{"--wait must not be negative"}
	}
	if *f.wait == 0 {
		return x.printReady(x.askReady(ctx))
	}
	// The wait bounds the whole, --timeout each request: a wait longer
	// than the request timeout must not be cut short by it.
	base, stop := signal.NotifyContext(context.WithoutCancel(ctx), os.Interrupt)
	defer stop()
	base, cancel := context.WithTimeout(base, *f.wait)
	defer cancel()
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	var last *readyAnswer
	said := ""
	for {
		rctx, rcancel := context.WithTimeout(base, x.timeout)
		a := x.askReady(rctx)
		rcancel()
		if a.err != nil && base.Err() != nil && last != nil {
			a = last // cut off by the end of the wait: the answer before counts
		}
		if a.ready() {
			return x.printReady(a)
		}
		if s := a.waitingFor(); s != said {
			fmt.Fprintf(x.stderr, "aupctl ready: waiting: %s\n", s)
			said = s
		}
		last = a
		select {
		case <-base.Done():
			return x.printReady(a)
		case <-tick.C:
		}
	}
}

func (x *cli) askReady(ctx context.Context) *readyAnswer {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(x.server, "/")+"/readyz", nil)
	if err != nil {
		return &readyAnswer{err: &usageError{fmt.Sprintf("server %q: %v", x.server, err)}}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return &readyAnswer{err: fmt.Errorf("readyz: %w", err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	a := &readyAnswer{status: resp.StatusCode, body: body}
	if json.Unmarshal(body, &a.checks) != nil {
		a.err = fmt.Errorf("readyz answered %s: %.200q", resp.Status, body)
	}
	return a
}

func (a *readyAnswer) ready() bool { return a.err == nil && a.status == http.StatusOK }

// waitingFor is what a not-ready answer says, on one line.
func (a *readyAnswer) waitingFor() string {
	if a.err != nil {
		return a.err.Error()
	}
	var parts []string
	for k, v := range a.checks {
		if v != "ok" && k != "status" { // the sum of the others
			parts = append(parts, k+": "+v)
		}
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return fmt.Sprintf("status %d", a.status)
	}
	return strings.Join(parts, "; ")
}

func (x *cli) printReady(a *readyAnswer) error {
	if a.err != nil {
		return a.err
	}
	if x.json {
		x.printRaw(a.body)
	} else {
		for _, k := range readyKeys(a.checks) {
			fmt.Fprintf(x.stdout, "%s: %s\n", k, a.checks[k])
		}
	}
	if a.status != http.StatusOK {
		return errDenied
	}
	return nil
}

// readyKeys orders the checks of a /readyz answer: the summary and the
// main checks first, then the rest (a Redis Cluster's shards) by name.
func readyKeys(checks map[string]string) []string {
	first := []string{"status", "aupd", "nats", "jetstream", "redis", "redis_cluster", "readiness"}
	var keys, rest []string
	for _, k := range first {
		if _, ok := checks[k]; ok {
			keys = append(keys, k)
		}
	}
	for k := range checks {
		if !slices.Contains(first, k) {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	return append(keys, rest...)
}

func versionCmd(_ context.Context, x *cli, _ []string, _ *flags) error {
	in := buildinfo.Read()
	if x.json {
		return x.printJSON(map[string]any{"program": "aupctl", "version": in.Version, "revision": in.Revision,
			"build_date": in.BuildDate, "go_version": in.GoVersion, "modified": in.Modified})
	}
	fmt.Fprintln(x.stdout, "aupctl", in)
	return nil
}
