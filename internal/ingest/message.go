package ingest

import (
	"bytes"
	"mime"
	"net/mail"
	"strings"
	"unicode/utf8"

	"github.com/aupd/aupd/internal/events"
)

// MaxSample bounds the raw message kept as an event's sample; the notifier
// cuts it further for evidence.txt.
const MaxSample = 256 << 10

// headerValue bounds a header field kept in an event's message.
const headerValue = 998

var wordDecoder = mime.WordDecoder{}

// Sample builds an event's message from a raw RFC 5322 message: the
// identifying headers, decoded, and the text itself cut at MaxSample.
// Nothing in it is trusted: fields are bounded and kept on one line.
func Sample(raw []byte) *events.Message {
	m := &events.Message{Raw: cutUTF8(raw, MaxSample)}
	head := raw
	if len(head) > 64<<10 {
		head = head[:64<<10]
	}
	pm, err := mail.ReadMessage(bytes.NewReader(head))
	if err != nil {
		return m
	}
	h := pm.Header
	m.MessageID = oneLine(h.Get("Message-Id"))
	m.From = decodeHeader(h.Get("From"))
	m.Subject = decodeHeader(h.Get("Subject"))
	m.Date = oneLine(h.Get("Date"))
	if to := h.Get("To"); to != "" {
		if list, err := mail.ParseAddressList(to); err == nil {
			for _, a := range list {
				if len(m.To) < 50 {
					m.To = append(m.To, oneLine(a.Address))
				}
			}
		} else {
			m.To = []string{decodeHeader(to)}
		}
	}
	return m
}

// decodeHeader decodes RFC 2047 words and bounds the value.
func decodeHeader(s string) string {
	if d, err := wordDecoder.DecodeHeader(s); err == nil {
		s = d
	}
	return oneLine(s)
}

// oneLine keeps a value on one bounded line of valid UTF-8.
func oneLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	return cutUTF8([]byte(s), headerValue)
}

// cutUTF8 returns at most n bytes of b, not splitting a character, as
// valid UTF-8.
func cutUTF8(b []byte, n int) string {
	if len(b) > n {
		end := n
		for end > 0 && !utf8.RuneStart(b[end]) {
			end--
		}
		b = b[:end]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
