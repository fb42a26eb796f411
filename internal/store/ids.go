package store

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"strings"
	"time"
)

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// NewID returns a unique id that sorts by creation time: 48 bits of
// milliseconds and 80 random bits, 26 characters of base32hex.
func NewID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	_, _ = rand.Read(b[6:])
	return strings.ToLower(idEncoding.EncodeToString(b[:]))
}

// idSource hands out ids like NewID's for one call: one time and one
// random draw, made distinct by a counter in the last 16 bits, and encoded
// into a caller's buffer without allocating.
type idSource struct {
	b [16]byte
	n uint16
}

func newIDSource(now time.Time) *idSource {
	s := &idSource{}
	binary.BigEndian.PutUint64(s.b[:8], uint64(now.UnixMilli())<<16)
	_, _ = rand.Read(s.b[6:14])
	return s
}

// next appends the next id (26 characters) to buf.
func (s *idSource) next(buf []byte) []byte {
	binary.BigEndian.PutUint16(s.b[14:], s.n)
	s.n++
	var out [26]byte
	idEncoding.Encode(out[:], s.b[:]) // the alphabet is lower case already
	return append(buf, out[:]...)
}
