package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimiterHoldsBackRepeats(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), time.Hour)
	for range 1000 {
		l.Warn("ingest batch", "err", "redis down")
	}
	l.Warn("other message")
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("%d lines for 1000 repeats and one other message:\n%s", n, buf.String())
	}
	l.last["ingest batch"] = time.Now().Add(-2 * time.Hour)
	l.Warn("ingest batch", "err", "redis down")
	if !strings.Contains(buf.String(), "repeats_suppressed=999") {
		t.Fatalf("the next line does not say how many were held back:\n%s", buf.String())
	}
}
