package scale

import (
	"strings"
)

// label is the value of one label of a series name{a="x",b="y"}.
func label(series, name string) string {
	_, rest, ok := strings.Cut(series, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}
