package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStrayArgumentsNeverStartTheDaemon(t *testing.T) {
	for _, args := range [][]string{
		{"check-confg", "aupd.yml"}, {"serve"}, {"-config", "aupd.yml", "extra"}, {"run", "now"}, {"version", "extra"}, {"--version", "extra"},
	} {
		var out, errb bytes.Buffer
		// A daemon would block here; an error returns at once.
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("aupd %v: exit %d, want 2", args, code)
		}
		if !strings.Contains(errb.String(), "usage: aupd") {
			t.Errorf("aupd %v: no usage in %q", args, errb.String())
		}
	}
}

func TestVersionAndHelp(t *testing.T) {
	var out, errb bytes.Buffer
	for _, arg := range []string{"version", "--version", "-version"} {
		out.Reset()
		if code := run([]string{arg}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "aupd version ") || !strings.Contains(out.String(), ", revision ") {
			t.Errorf("aupd %s: %d %q %q", arg, code, out.String(), errb.String())
		}
	}
	out.Reset()
	if code := run([]string{"help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "check-config FILE") {
		t.Errorf("aupd help: %d %q", code, out.String())
	}
}

func TestCheckConfigMasksNATSCredentials(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "aupd.yml")
	if err := os.WriteFile(path, []byte("nats: {url: \"nats://svc:hunter2@nats.internal:4222\"}\nnotifier: {eml_dir: n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", path}, &out, &errb); code != 0 {
		t.Fatalf("check-config: %d %s", code, errb.String())
	}
	if strings.Contains(out.String(), "hunter2") || !strings.Contains(out.String(), "nats://svc:xxxxx@nats.internal:4222") {
		t.Errorf("check-config printed:\n%s", out.String())
	}
}

// check-config says how accounts outside every company are treated, and
// where their notices go.
func TestCheckConfigSaysHowAccountsOutsideCompaniesAreTreated(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"no companies", "notifier: {eml_dir: n, fallback_abuse_contact: abuse@provider.test}\n",
			[]string{"# no companies, so every account is outside every company", "notices go to notifier.fallback_abuse_contact (abuse@provider.test)", "enforced by Postfix, Dovecot and webmail"}},
		{"companies", "notifier: {eml_dir: n, fallback_abuse_contact: abuse@provider.test}\ncompanies: [{id: acme, domains: [acme.test], abuse_contact: abuse@acme.test}]\n",
			[]string{"# an account whose domain is in no company is governed like any other", "notices go to notifier.fallback_abuse_contact (abuse@provider.test)"}},
	} {
		head, _ := checkConfigOf(t, dir, tc.name, tc.yaml)
		for _, w := range tc.want {
			if !strings.Contains(head, w) {
				t.Errorf("%s: check-config's head lacks %q:\n%s", tc.name, w, head)
			}
		}
		if tc.name == "companies" && strings.Contains(head, "no companies") {
			t.Errorf("companies: check-config says there are none:\n%s", head)
		}
	}
}

// check-config warns about a company's abuse contact in the company's own
// domains and a fallback contact in a company's domain: mailboxes aupd may
// suspend, whose notices must not go to them.
func TestCheckConfigWarnsAboutContactsInCompanyDomains(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml string
		want, not  []string
	}{
		{"own domain", "notifier: {eml_dir: n, fallback_abuse_contact: abuse@provider.test}\ncompanies: [{id: acme, domains: [acme.test, ACME2.test], abuse_contact: Abuse@Acme2.test}]\n",
			[]string{"# warning: company acme: abuse_contact Abuse@Acme2.test is in the company's own domain acme2.test"}, []string{"fallback_abuse_contact abuse@provider.test is in"}},
		{"fallback in a company", "notifier: {eml_dir: n, fallback_abuse_contact: 'Desk <desk@acme.test>'}\ncompanies: [{id: acme, domains: [acme.test], abuse_contact: abuse@elsewhere.test}]\n",
			[]string{"# warning: notifier.fallback_abuse_contact Desk <desk@acme.test> is in domain acme.test of company acme"}, []string{"company acme: abuse_contact"}},
		{"clean", "notifier: {eml_dir: n, fallback_abuse_contact: abuse@provider.test}\ncompanies: [{id: acme, domains: [acme.test], abuse_contact: abuse@elsewhere.test}]\n",
			nil, []string{"# warning"}},
	} {
		head, _ := checkConfigOf(t, dir, tc.name, tc.yaml)
		for _, w := range tc.want {
			if !strings.Contains(head, w) {
				t.Errorf("%s: check-config's head lacks %q:\n%s", tc.name, w, head)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(head, w) {
				t.Errorf("%s: check-config's head has %q:\n%s", tc.name, w, head)
			}
		}
	}
}

// check-config notes once that a desk without public_url and link_key
// offers no sign-in link by mail, and prints desk_contacts as given
// after checking them.
func TestCheckConfigNotesDeskWithoutLinks(t *testing.T) {
	dir := t.TempDir()
	key := strings.Repeat("k", 40)
	for _, tc := range []struct {
		name, yaml string
		notes      int
	}{
		{"tokens only", "notifier: {eml_dir: n}\ndesk: {enabled: true}\n", 1},
		{"links", "notifier: {eml_dir: n}\ndesk: {enabled: true, public_url: https://aupd.test/desk, link_key: " + key + "}\ncompanies: [{id: acme, domains: [acme.test], desk_contacts: [Alice@Partner.test]}]\n", 0},
		{"off", "notifier: {eml_dir: n}\n", 0},
	} {
		head, body := checkConfigOf(t, dir, tc.name, tc.yaml)
		if n := strings.Count(head, "# note: desk: public_url and link_key are not both set"); n != tc.notes {
			t.Errorf("%s: %d notes, want %d:\n%s", tc.name, n, tc.notes, head)
		}
		if tc.name == "links" && !strings.Contains(body, "desk_contacts:") {
			t.Errorf("links: no desk_contacts in the config printed:\n%s", body)
		}
	}
	path := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(path, []byte("notifier: {eml_dir: n}\ncompanies: [{id: acme, domains: [acme.test], desk_contacts: [not-an-address]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", path}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "desk_contacts") {
		t.Errorf("a bad desk contact: %d %s", code, errb.String())
	}
}

// checkConfigOf writes yaml to a file named after name in dir, runs
// `aupd check-config` on it, which must succeed, and returns its head (the
// comment lines) and the YAML document after them.
func checkConfigOf(t *testing.T, dir, name, yaml string) (head, body string) {
	t.Helper()
	path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", path}, &out, &errb); code != 0 {
		t.Fatalf("%s: check-config: %d %s", name, code, errb.String())
	}
	head, body, ok := strings.Cut(out.String(), "\n---\n")
	if !ok {
		t.Fatalf("%s: no YAML document after the comments:\n%s", name, out.String())
	}
	return head, body
}
