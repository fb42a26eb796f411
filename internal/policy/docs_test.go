package policy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/aupd/aupd/internal/config"
)

// The enforcement docs must work as pasted: their YAML passes aupd's
// strict config check, and their Postfix and Dovecot blocks are the lines
// of the files in deploy/ that the integration test runs.

var fence = regexp.MustCompile("(?ms)^```([a-z]*)\\n(.*?)^```")

func blocks(t *testing.T, doc, lang string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../docs", doc))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range fence.FindAllStringSubmatch(string(b), -1) {
		if m[1] == lang {
			out = append(out, m[2])
		}
	}
	return out
}

func TestDocsYAMLPassesCheckConfig(t *testing.T) {
	for _, doc := range []string{"dovecot.md", "postfix.md"} {
		yamls := blocks(t, doc, "yaml")
		if len(yamls) == 0 {
			t.Fatalf("%s has no yaml block", doc)
		}
		for i, y := range yamls {
			path := filepath.Join(t.TempDir(), "aupd.yml")
			if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := config.Load(path); err != nil {
				t.Errorf("%s, yaml block %d does not pass check-config: %v\n%s", doc, i+1, err, y)
			}
		}
	}
}

func TestDocsConfigBlocksAreTheDeployFiles(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join("../../deploy", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	files := map[string]string{
		"postfix/main.cf":                         read("postfix/main.cf"),
		"postfix/master.cf":                       read("postfix/master.cf"),
		"dovecot/conf.d/95-aupd.conf":             read("dovecot/conf.d/95-aupd.conf"),
		"dovecot/conf.d/96-aupd-sessionlock.conf": read("dovecot/conf.d/96-aupd-sessionlock.conf"),
		"postfix/aupd_domains":                    read("postfix/aupd_domains"),
	}
	lines := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				m[strings.Join(strings.Fields(l), " ")] = true
			}
		}
		return m
	}
	checked := 0
	for _, doc := range []string{"dovecot.md", "postfix.md"} {
		for _, blk := range blocks(t, doc, "") {
			// Config blocks are the ones with a "name = value" line or a
			// master.cf service line; commands and transcripts start
			// with "$".
			if strings.HasPrefix(strings.TrimSpace(blk), "$") {
				continue
			}
			for l := range lines(blk) {
				found := false
				for _, f := range files {
					if lines(f)[l] {
						found = true
						break
					}
				}
				if !found {
					t.Errorf("%s: %q is in no file of deploy/", doc, l)
				}
				checked++
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d config lines checked", checked)
	}
}
