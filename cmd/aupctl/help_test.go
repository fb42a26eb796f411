package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func runCtl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runIn(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestEveryCommandHasItsOwnHelp(t *testing.T) {
	table := commandTable()
	_, top, _ := runCtl(t, "--help")
	seen := map[string]bool{}
	for name, c := range table {
		if c.summary == "" || c.group == "" {
			t.Errorf("%s: no summary or group", name)
		}
		if !strings.Contains(top, "  "+name) {
			t.Errorf("aupctl --help does not list %s", name)
		}
		code, out, _ := runCtl(t, name, "--help")
		if code != 0 || !strings.HasPrefix(out, "usage: aupctl "+name) || !strings.Contains(out, "Global flags") {
			t.Errorf("aupctl %s --help: exit %d\n%s", name, code, out)
		}
		if seen[out] {
			t.Errorf("aupctl %s --help is the same text as another command's", name)
		}
		seen[out] = true
		if _, out2, _ := runCtl(t, "help", name); out2 != out {
			t.Errorf("aupctl help %s differs from aupctl %s --help", name, name)
		}
	}
	_, out, _ := runCtl(t, "suspend", "-h")
	for _, want := range []string{"-service", "-reason", "webmail_send"} {
		if !strings.Contains(out, want) {
			t.Errorf("suspend --help lacks %q:\n%s", want, out)
		}
	}
	if code, _, _ := runCtl(t, "help", "frobnicate"); code != exitUsage {
		t.Errorf("help of an unknown command: exit %d", code)
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, errs := runCtl(t, "completion", sh)
		if code != 0 || !strings.Contains(out, "reinstate") || !strings.Contains(out, "service") {
			t.Fatalf("completion %s: %d %s", sh, code, errs)
		}
		if sh != "bash" {
			continue
		}
		bash, err := exec.LookPath("bash")
		if err != nil {
			t.Log("no bash to check the script with")
			continue
		}
		// The script parses, and completes a command's flags.
		script := out + `
COMP_WORDS=(aupctl suspend x --ser); COMP_CWORD=3; _aupctl; echo "${COMPREPLY[*]}"
COMP_WORDS=(aupctl rein); COMP_CWORD=1; _aupctl; echo "${COMPREPLY[*]}"
`
		res, err := exec.Command(bash, "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, res)
		}
		lines := strings.Split(strings.TrimSpace(string(res)), "\n")
		if len(lines) != 2 || !strings.Contains(lines[0], "--service") || strings.TrimSpace(lines[1]) != "reinstate" {
			t.Errorf("bash completion answered %q", lines)
		}
	}
	if code, _, _ := runCtl(t, "completion", "tcsh"); code != exitUsage {
		t.Errorf("unknown shell: exit %d", code)
	}
}

func TestConfigAndTokenFiles(t *testing.T) {
	h := start(t)
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte("server: "+h.url+"\ntoken_file: "+tokFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AUPCTL_SERVER", "")
	t.Setenv("AUPCTL_TOKEN", "")
	t.Setenv("HOME", dir) // no default config file of the user running the test
	t.Setenv("XDG_CONFIG_HOME", dir)
	if code, out, errs := runCtl(t, "--config", cfg, "lock", "cfg@example.com", "--reason", "x"); code != 0 {
		t.Fatalf("with a config file: %d %s %s", code, out, errs)
	}
	// A flag wins over the config file.
	if code, _, _ := runCtl(t, "--config", cfg, "--token", "wrong", "status", "cfg@example.com"); code != exitRefused {
		t.Errorf("--token did not override the config file: exit %d", code)
	}
	// --token-file, and AUPCTL_CONFIG.
	if code, _, errs := runCtl(t, "--server", h.url, "--token-file", tokFile, "status", "cfg@example.com"); code != 0 {
		t.Errorf("--token-file: %d %s", code, errs)
	}
	t.Setenv("AUPCTL_CONFIG", cfg)
	if code, _, errs := runCtl(t, "status", "cfg@example.com"); code != 0 {
		t.Errorf("AUPCTL_CONFIG: %d %s", code, errs)
	}
	// The default location, ~/.config/aupctl/config.yml.
	t.Setenv("AUPCTL_CONFIG", "")
	if err := os.MkdirAll(filepath.Join(dir, "aupctl"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "aupctl", "config.yml"), []byte("server: "+h.url+"\ntoken: "+adminToken+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCtl(t, "status", "cfg@example.com")
	if code != 0 || !strings.Contains(errs, "readable by others") {
		t.Errorf("default config: %d %q", code, errs)
	}
	// Strict: an unknown key is an error.
	if err := os.WriteFile(cfg, []byte("sever: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCtl(t, "--config", cfg, "status", "cfg@example.com"); code != exitUsage || !strings.Contains(errs, "sever") {
		t.Errorf("unknown key: %d %s", code, errs)
	}
	if code, _, _ := runCtl(t, "--config", filepath.Join(dir, "missing.yml"), "status", "a@example.com"); code != exitUsage {
		t.Errorf("missing config file: exit %d", code)
	}
}

func TestReadyAndVersion(t *testing.T) {
	ready, degraded := true, false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || r.Header.Get("Authorization") != "" {
			http.NotFound(w, r)
			return
		}
		if degraded {
			_, _ = w.Write([]byte(`{"status":"degraded","nats":"ok","jetstream":"ok","redis":"ok","redis_cluster":"1 of 2 masters fail the write probe (10.0.0.3:6379)",` +
				`"redis_shard 10.0.0.3:6379":"write probe: connection refused","redis_shard 10.0.0.2:6379":"ok"}`))
			return
		}
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"nats":"ok","redis":"connection refused"}`))
			return
		}
		_, _ = w.Write([]byte(`{"nats":"ok","redis":"ok"}`))
	}))
	defer srv.Close()
	if code, out, _ := runCtl(t, "--server", srv.URL, "ready"); code != 0 || !strings.Contains(out, "redis: ok") {
		t.Errorf("ready: %d %q", code, out)
	}
	ready = false
	if code, out, _ := runCtl(t, "--server", srv.URL, "ready"); code != exitDenied || !strings.Contains(out, "connection refused") {
		t.Errorf("not ready: %d %q", code, out)
	}
	// A degraded aupd is ready (exit 0) and says which check fails.
	ready, degraded = true, true
	want := "status: degraded\nnats: ok\njetstream: ok\nredis: ok\nredis_cluster: 1 of 2 masters fail the write probe (10.0.0.3:6379)\n" +
		"redis_shard 10.0.0.2:6379: ok\nredis_shard 10.0.0.3:6379: write probe: connection refused\n"
	if code, out, _ := runCtl(t, "--server", srv.URL, "ready"); code != 0 || out != want {
		t.Errorf("degraded: %d %q, want 0 %q", code, out, want)
	}
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}, {"--server", "http://127.0.0.1:1", "--version"}} {
		if code, out, _ := runCtl(t, args...); code != 0 || !strings.HasPrefix(out, "aupctl version ") || !strings.Contains(out, ", revision ") {
			t.Errorf("%v: %d %q", args, code, out)
		}
	}
}

// TestReadyWait starts with an aupd that is not ready, then becomes
// ready: ready --wait ends 0 once it is, saying on stderr once per change
// what it waits for, even when the wait is longer than --timeout; it ends
// 6 when the time is up on a not-ready answer, 1 when nothing answers.
func TestReadyWait(t *testing.T) {
	var mu sync.Mutex
	asked, readyAt := 0, 4 // ready from the fourth request on
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked++
		n := asked
		mu.Unlock()
		switch {
		case n < 3:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"not_ready","aupd":"starting","waiting_for":"redis"}`))
		case n < readyAt:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"not_ready","aupd":"starting","waiting_for":"nats"}`))
		default:
			_, _ = w.Write([]byte(`{"nats":"ok","redis":"ok"}`))
		}
	}))
	defer srv.Close()

	code, out, errs := runCtl(t, "--server", srv.URL, "--timeout", "100ms", "ready", "--wait", "30s")
	if code != 0 || out != "nats: ok\nredis: ok\n" {
		t.Errorf("ready --wait: exit %d, stdout %q", code, out)
	}
	if want := "aupctl ready: waiting: aupd: starting; waiting_for: redis\naupctl ready: waiting: aupd: starting; waiting_for: nats\n"; errs != want {
		t.Errorf("ready --wait: stderr\n%q\nwant\n%q", errs, want)
	}
	if asked != readyAt {
		t.Errorf("asked %d times, want %d", asked, readyAt)
	}

	mu.Lock()
	asked, readyAt = 0, 1<<30 // never ready
	mu.Unlock()
	code, out, errs = runCtl(t, "--server", srv.URL, "ready", "--wait", "600ms")
	if code != exitDenied || !strings.Contains(out, "aupd: starting") || strings.Count(errs, "waiting:") != 2 {
		t.Errorf("ready --wait, never ready: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if asked < 2 {
		t.Errorf("never ready: asked %d times in 600ms", asked)
	}

	srv.Close()
	code, _, errs = runCtl(t, "--server", srv.URL, "ready", "--wait", "300ms")
	if code != exitError || strings.Count(errs, "waiting:") != 1 || !strings.Contains(errs, "aupctl ready: readyz:") {
		t.Errorf("ready --wait, nothing listening: exit %d, stderr %q", code, errs)
	}
	if code, _, _ := runCtl(t, "--server", srv.URL, "ready", "--wait", "-1s"); code != exitUsage {
		t.Errorf("ready --wait -1s: exit %d", code)
	}
}
