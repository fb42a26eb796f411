package app

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/aupd/aupd/internal/testutil"
)

// TestDashboardThroughARealScrape scrapes a running aupd with a real
// Prometheus (Debian's, which scripts/check-deploy installs for promtool)
// and runs every dashboard query against what it stored. What a scrape
// does to names shows only there: a target label named job or instance is
// renamed exported_job (so the "Scheduled jobs" panel once showed "aupd
// ok" for every job), and a legend's {{label}} that the query's result
// lacks shows as an empty name.
func TestDashboardThroughARealScrape(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("no prometheus binary (scripts/check-deploy installs Debian's prometheus)")
	}
	reg := runningRegistry(t)
	target := httpServe(t, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	dir := t.TempDir()
	cfg := fmt.Sprintf("global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n  - job_name: aupd\n    static_configs: [{targets: [%q]}]\n", target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	web := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	out, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	})
	query := func(q string) ([]map[string]string, error) {
		resp, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var r struct {
			Status, Error string
			Data          struct {
				Result []struct{ Metric map[string]string }
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return nil, err
		}
		if r.Status != "success" {
			return nil, fmt.Errorf("%s", r.Error)
		}
		var labels []map[string]string
		for _, s := range r.Data.Result {
			labels = append(labels, s.Metric)
		}
		return labels, nil
	}
	// Three scrapes, so that increase() over the dashboard's interval has
	// points to work with.
	testutil.Eventually(t, 60*time.Second, func() bool {
		res, err := query(`count_over_time(up{job="aupd"}[1m]) >= 3`)
		return err == nil && len(res) == 1
	}, "prometheus did not scrape aupd three times")

	res, err := query(`count by (__name__) ({__name__=~"aupd_.+", exported_job=~".+"} or {__name__=~"aupd_.+", exported_instance=~".+"})`)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range res {
		t.Errorf("%s carries a label named job or instance, which the scrape renames exported_*", m["__name__"])
	}
	if r, err := query(`aupd_job_runs_total{name="outbox_sweep", result="ok"}`); err != nil || len(r) != 1 {
		t.Errorf("aupd_job_runs_total by name after the scrape: %v %v", r, err)
	}

	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr, LegendFormat string }
		}
	}
	if err := json.Unmarshal([]byte(read(t, "deploy/grafana/aupd.json")), &dash); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer(`"$job"`, `"aupd"`, `"$instance"`, `".*"`, "$__rate_interval", "1m", "$__interval", "1m")
	legend := regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	queried := 0
	for _, p := range dash.Panels {
		for _, q := range p.Targets {
			expr := vars.Replace(q.Expr)
			res, err := query(expr)
			if err != nil {
				t.Errorf("panel %q: %s: %v", p.Title, expr, err)
				continue
			}
			queried++
			for _, m := range res {
				for _, l := range legend.FindAllStringSubmatch(q.LegendFormat, -1) {
					if m[l[1]] == "" {
						t.Errorf("panel %q: legend %q names %s, which the query's result %v lacks", p.Title, q.LegendFormat, l[1], m)
					}
				}
			}
		}
	}
	if queried < 20 {
		t.Errorf("only %d dashboard queries ran", queried)
	}
}

// httpServe serves h on a loopback port for the test's duration.
func httpServe(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
