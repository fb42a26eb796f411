package app

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/aupd/aupd/internal/testutil"
)

// root is the repository root, from this package.
const root = "../.."

// pendingMetrics may be named by the docs, rules and dashboard before the
// change that registers them lands; the test says so instead of failing.
var pendingMetrics = map[string]bool{}

var metricName = regexp.MustCompile(`\baupd_[a-z0-9_]+`)

// runningRegistry starts aupd (every component on) and returns its registry.
func runningRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	ns := testutil.NATSServer(t, "")
	_, prefix := testutil.Redis(t)
	cfg := testConfig(t, ns.ClientURL(), prefix)
	cfg.Jobs.Digest.Enabled = true
	// every optional component on, so that all its metrics register
	cfg.Desk.Enabled = true
	cfg.Desk.PublicURL = "https://aupd.provider.test/desk"
	cfg.Desk.LinkKey = "test-link-key-0123456789-0123456789-abcdef"
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Registry: reg, OnReady: func(Info) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("aupd exited: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("aupd did not start")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("aupd: %v", err)
		}
	})
	return reg
}

// registered reports whether reg has a metric family of that name (a
// histogram's _bucket, _sum and _count series belong to it). It tries to
// register a probe of the same name: only an unknown name succeeds.
func registered(reg *prometheus.Registry, name string) bool {
	probe := func(n string) bool {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: n, Help: "probe"})
		if err := reg.Register(g); err != nil {
			return true
		}
		reg.Unregister(g)
		return false
	}
	if probe(name) {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok && probe(base) {
			return true
		}
	}
	return false
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sourceMetrics are the metric names defined in the code: every Name of
// a prometheus.*Opts and every prometheus.NewDesc.
func sourceMetrics(t *testing.T) []string {
	t.Helper()
	def := regexp.MustCompile(`(?:Name:\s*|NewDesc\(\s*)"(aupd_[a-z0-9_]+)"`)
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "data" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range def.FindAllStringSubmatch(string(b), -1) {
			seen[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// documented are the metrics of docs/metrics.md's tables.
func documented(t *testing.T) map[string]bool {
	row := regexp.MustCompile("(?m)^\\| `(aupd_[a-z0-9_]+)` \\|")
	out := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(read(t, "docs/metrics.md"), -1) {
		out[m[1]] = true
	}
	return out
}

func TestMetricsReferenceIsComplete(t *testing.T) {
	reg := runningRegistry(t)
	docs := documented(t)
	src := sourceMetrics(t)
	if len(src) < 30 {
		t.Fatalf("found only %d metrics in the source: %v", len(src), src)
	}
	for _, n := range src {
		if !docs[n] {
			t.Errorf("docs/metrics.md does not list %s", n)
		}
	}
	for n := range docs {
		if !registered(reg, n) {
			if pendingMetrics[n] {
				t.Logf("%s is documented and not registered yet (pending)", n)
				continue
			}
			t.Errorf("docs/metrics.md lists %s, which a running aupd does not register", n)
		}
	}
}

// checkQueried checks that every metric a query names exists.
func checkQueried(t *testing.T, reg *prometheus.Registry, where string, exprs []string) {
	t.Helper()
	if len(exprs) == 0 {
		t.Fatalf("%s: no queries found", where)
	}
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			if !registered(reg, n) && !pendingMetrics[n] {
				t.Errorf("%s queries %s, which a running aupd does not register: %s", where, n, e)
			}
		}
	}
}

func TestDashboardAndRulesQueryRealMetrics(t *testing.T) {
	reg := runningRegistry(t)

	var dash struct {
		Templating struct {
			List []struct {
				Name, Type string
				Query      any
			}
		}
		Panels []struct {
			Title      string
			Datasource struct{ UID string }
			Targets    []struct{ Expr string }
		}
	}
	if err := json.Unmarshal([]byte(read(t, "deploy/grafana/aupd.json")), &dash); err != nil {
		t.Fatal(err)
	}
	var hasDS bool
	for _, v := range dash.Templating.List {
		hasDS = hasDS || v.Name == "datasource" && v.Type == "datasource"
	}
	if !hasDS {
		t.Error("the dashboard has no datasource variable")
	}
	var exprs []string
	for _, p := range dash.Panels {
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	for _, want := range []string{"aupd_events_total", "aupd_batch_seconds_bucket", "aupd_consumer_lag", "aupd_suspensions_total",
		"aupd_notices_total", "aupd_policy_requests_total", "aupd_policy_request_duration_seconds_bucket", "aupd_lockouts_total", "aupd_dead_letters_total"} {
		if !slices.ContainsFunc(exprs, func(e string) bool { return strings.Contains(e, want) }) {
			t.Errorf("the dashboard shows nothing of %s", want)
		}
	}
	checkQueried(t, reg, "deploy/grafana/aupd.json", exprs)

	type rules struct {
		Groups []struct {
			Rules []struct {
				Alert, Record, Expr string
				Annotations         map[string]string
			}
		}
	}
	runbooks := read(t, "docs/runbooks.md")
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^##+ (.+)$`).FindAllStringSubmatch(runbooks, -1) {
		anchors[anchor(m[1])] = true
	}
	exprs = nil
	alerts := 0
	for _, f := range []string{"deploy/prometheus/aupd.rules.yml", "deploy/prometheus/aupd.alerts.yml"} {
		var r rules
		if err := yaml.Unmarshal([]byte(read(t, f)), &r); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range r.Groups {
			for _, rule := range g.Rules {
				exprs = append(exprs, rule.Expr)
				if rule.Alert == "" {
					continue
				}
				alerts++
				url := rule.Annotations["runbook_url"]
				page, frag, _ := strings.Cut(url, "#")
				if page != "docs/runbooks.md" || !anchors[frag] {
					t.Errorf("alert %s: runbook_url %q is not a section of docs/runbooks.md", rule.Alert, url)
				}
			}
		}
	}
	if alerts < 10 {
		t.Errorf("%d alerts, want at least 10", alerts)
	}
	checkQueried(t, reg, "deploy/prometheus", exprs)
}

// anchor is the fragment a Markdown renderer gives a heading.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}
