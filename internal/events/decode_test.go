package events

import (
	"encoding/binary"
	"testing"
)

// TestAnySpecial checks the 8-bytes-at-once scan against the byte table:
// every byte value at every position, among plain bytes that include
// UTF-8's high ones (whose borrows and high bits the word test must not
// take for a special byte).
func TestAnySpecial(t *testing.T) {
	fillers := []byte{'a', ' ', '!', '#', '[', ']', 0x7f, 0x80, 0xa0, 0xdc, 0xe2, 0xff, '"' + 1, '\\' + 1, 0x20, 0x21}
	for _, fill := range fillers {
		if stringSpecial[fill] {
			t.Fatalf("filler %#x is special", fill)
		}
		for pos := range 8 {
			for c := range 256 {
				var w [8]byte
				for i := range w {
					w[i] = fill
				}
				w[pos] = byte(c)
				got := anySpecial(binary.LittleEndian.Uint64(w[:]))
				if want := stringSpecial[c]; got != want {
					t.Fatalf("word % x: anySpecial %v, want %v", w, got, want)
				}
			}
		}
	}
}

// TestSkipStringLong reads strings longer than a word, with the special
// byte at every offset, so that both the word scan and the byte scan end
// them.
func TestSkipStringLong(t *testing.T) {
	for n := range 40 {
		body := make([]byte, n)
		for i := range body {
			body[i] = "abcdéfgh"[i%8]
		}
		d := &decoder{data: []byte(`"` + string(body) + `"x`)}
		raw, esc, err := d.skipString()
		if err != nil || esc || string(raw) != string(body) || d.pos != n+2 {
			t.Fatalf("n=%d: raw %q escaped %v err %v pos %d", n, raw, esc, err, d.pos)
		}
		for _, bad := range []byte{'\n', 0x01, 0x1f} {
			b := append([]byte(`"`), body...)
			b = append(b, bad, 'z', '"')
			d := &decoder{data: b}
			if _, _, err := d.skipString(); err == nil {
				t.Fatalf("n=%d: control %#x accepted", n, bad)
			}
		}
		b := append([]byte(`"`), body...)
		b = append(b, `\"tail"`...)
		d = &decoder{data: b}
		raw, esc, err = d.skipString()
		if err != nil || !esc || string(raw) != string(body)+`\"tail` {
			t.Fatalf("n=%d escaped: raw %q escaped %v err %v", n, raw, esc, err)
		}
	}
}

// TestNormalizeAccountAtext takes RFC 5322 atext in a local part and
// refuses the rest.
func TestNormalizeAccountAtext(t *testing.T) {
	for _, ok := range []string{"o'neil+tag@example.com", "a!#$%&*+-/=?^_`{|}~z@example.com", "A.B@Example.COM", "0@x.y"} {
		if _, err := NormalizeAccount(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"a,b@example.com", "a b@example.com", `a"b@example.com`, "a(b)@example.com", "a[b]@example.com", "a;b@example.com", "a:b@example.com", "a\\b@example.com", "\u00e9@example.com", "a\x00@example.com", "a\x7f@example.com", ".a@example.com", "a..b@example.com"} {
		if _, err := NormalizeAccount(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
