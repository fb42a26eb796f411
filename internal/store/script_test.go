package store

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestLuaFunctionsAreShort keeps every function of the store's scripts
// under 60 lines, so that each does one job.
func TestLuaFunctionsAreShort(t *testing.T) {
	files, err := filepath.Glob("*.lua")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	start := regexp.MustCompile(`^(local )?function |= function\(`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var open []int // the first lines of the functions open, by indentation
		for i, line := range strings.Split(string(b), "\n") {
			trimmed := strings.TrimLeft(line, " ")
			depth := (len(line) - len(trimmed)) / 2
			if start.MatchString(trimmed) {
				open = append(open[:min(depth, len(open))], i)
				continue
			}
			if trimmed == "end" && depth < len(open) {
				if n := i - open[depth] + 1; n > 60 {
					t.Errorf("%s:%d: a function of %d lines", f, open[depth]+1, n)
				}
				open = open[:depth]
			}
		}
	}
}
