package notifier

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// volumeData puts a volume limit's crossing into words; max is the
// limit's (the suspension's threshold).
func volumeData(v *events.VolumeCrossing, max int) *VolumeData {
	d := &VolumeData{Since: v.Since.UTC(), Limit: fmt.Sprintf("%s in any %s", quantity(max, v.Kind), span(v.WindowSeconds))}
	switch {
	case v.Recipients != nil && v.Messages != nil:
		d.Sent = quantity(*v.Messages, rules.VolumeMessages) + " to " + quantity(*v.Recipients, rules.VolumeRecipients)
	case v.Recipients != nil:
		d.Sent = "mail to " + quantity(*v.Recipients, rules.VolumeRecipients)
	case v.Messages != nil:
		d.Sent = quantity(*v.Messages, rules.VolumeMessages)
	}
	for _, c := range v.Clients {
		if c = cleanLine(c, 60); c != "" && len(d.Clients) < 10 {
			d.Clients = append(d.Clients, c)
		}
	}
	return d
}

// quantity is "1 recipient", "2,001 recipients", "1 message".
func quantity(n int, kind string) string {
	unit := "recipient"
	if kind == rules.VolumeMessages {
		unit = "message"
	}
	if n != 1 {
		unit += "s"
	}
	return thousands(n) + " " + unit
}

// thousands writes n with a comma every three digits.
func thousands(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// span is a window in words: "24 hours", "1 hour", "90 minutes", "7 days".
func span(seconds int64) string {
	d := time.Duration(seconds) * time.Second
	unit := func(n int64, name string) string {
		if n == 1 {
			return "1 " + name
		}
		return strconv.FormatInt(n, 10) + " " + name + "s"
	}
	switch {
	case d >= 48*time.Hour && d%(24*time.Hour) == 0:
		return unit(int64(d/(24*time.Hour)), "day")
	case d >= time.Hour && d%time.Hour == 0:
		return unit(int64(d/time.Hour), "hour")
	}
	return unit(int64(d/time.Minute), "minute")
}
