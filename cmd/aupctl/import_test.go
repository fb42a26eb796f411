package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestImport(t *testing.T) {
	h := start(t)
	dir := t.TempDir()
	csvFile := filepath.Join(dir, "accounts.csv")
	var b strings.Builder
	b.WriteString("address,type,company\n")
	// More than one request's worth.
	for i := range importBatch + 5 {
		fmt.Fprintf(&b, "u%03d@example.com,mailbox,\n", i)
	}
	b.WriteString("Fwd@Example.com,forward\n")
	if err := os.WriteFile(csvFile, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out := h.want(0, adminToken, "import", csvFile, "--reason", "directory sync")
	if !strings.Contains(out, fmt.Sprintf("%d created, 0 updated, 0 unchanged, 0 failed", importBatch+6)) {
		t.Fatalf("first import:\n%s", out)
	}
	ctx := context.Background()
	a, err := h.store.Account(ctx, "fwd@example.com")
	if err != nil || !a.Provisioned || a.Type != "forward" || a.Company != "acme" {
		t.Fatalf("fwd: %+v %v", a, err)
	}
	// Idempotent.
	out = h.want(0, adminToken, "import", csvFile, "--reason", "directory sync")
	if !strings.HasSuffix(out, fmt.Sprintf("0 created, 0 updated, %d unchanged, 0 failed\n", importBatch+6)) {
		t.Fatalf("second import:\n%s", out)
	}
	// JSON lines from standard input; one change, one bad line.
	jl := filepath.Join(dir, "accounts.jsonl")
	if err := os.WriteFile(jl, []byte(`{"address":"fwd@example.com","type":"mailbox"}
{"address":"new@example.com"}
{"address":"bad address"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := h.ctl(adminToken, "import", jl, "--reason", "sync")
	if code == 0 || !strings.Contains(out, "fwd@example.com: updated") || !strings.Contains(out, "new@example.com: created") ||
		!strings.Contains(out, "1 created, 1 updated, 0 unchanged, 1 failed") || !strings.Contains(errs, "1 of 3 accounts failed") {
		t.Fatalf("jsonl import: exit %d\n%s\n%s", code, out, errs)
	}
	out = h.want(0, viewToken, "licences", "acme")
	if !regexp.MustCompile(fmt.Sprintf(`(?m)^Licences:\s+%d$`, importBatch+7)).MatchString(out) ||
		!regexp.MustCompile(fmt.Sprintf(`(?m)^  provisioned:\s+%d$`, importBatch+7)).MatchString(out) {
		t.Errorf("licences:\n%s", out)
	}
	// A viewer cannot import; a file that is neither is refused.
	h.want(exitRefused, viewToken, "import", csvFile, "--reason", "x")
	bad := filepath.Join(dir, "bad.csv")
	_ = os.WriteFile(bad, []byte("a,b,c,d\n"), 0o600)
	h.want(exitUsage, adminToken, "import", bad, "--reason", "x")
	h.want(exitUsage, adminToken, "import", csvFile)
}
