package main

import (
	"fmt"
	"os"
)

// campaignCmd is `aupload campaign` (work in progress on this branch).
func campaignCmd([]string) int {
	fmt.Fprintln(os.Stderr, "aupload campaign: not built yet")
	return 2
}
