package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/aupd/aupd/internal/buildinfo"
)

// readyCmd asks GET /readyz, which needs no token.
func readyCmd(ctx context.Context, x *cli, _ []string, _ *flags) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(x.server, "/")+"/readyz", nil)
	if err != nil {
		return &usageError{fmt.Sprintf("server %q: %v", x.server, err)}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("readyz: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var checks map[string]string
	if json.Unmarshal(body, &checks) != nil {
		return fmt.Errorf("readyz answered %s: %.200q", resp.Status, body)
	}
	if x.json {
		x.printRaw(body)
	} else {
		for _, k := range []string{"aupd", "nats", "redis"} {
			if v, ok := checks[k]; ok {
				fmt.Fprintf(x.stdout, "%s: %s\n", k, v)
			}
		}
	}
	if resp.StatusCode != http.StatusOK {
		return errDenied
	}
	return nil
}

func versionCmd(_ context.Context, x *cli, _ []string, _ *flags) error {
	fmt.Fprintln(x.stdout, "aupctl", buildinfo.Read())
	return nil
}
