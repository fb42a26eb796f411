package clientaddr

import (
	"net/http"
	"testing"
)

func TestAddr(t *testing.T) {
	r, err := New([]string{"10.0.0.0/8", "192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, peer string
		xff        []string
		res        *Resolver
		want       string
	}{
		{"no proxy trusted: the header is ignored", "198.51.100.7:1234", []string{"203.0.113.9"}, nil, "198.51.100.7"},
		{"an untrusted peer's header is ignored", "198.51.100.7:1234", []string{"203.0.113.9"}, r, "198.51.100.7"},
		{"a trusted proxy's client", "10.1.2.3:1234", []string{"203.0.113.9"}, r, "203.0.113.9"},
		{"a trusted proxy without a header", "10.1.2.3:1234", nil, r, "10.1.2.3"},
		{"a bare trusted address", "192.0.2.1:80", []string{"203.0.113.9"}, r, "203.0.113.9"},
		{"a client's forged entries come first and are not reached", "10.1.2.3:1", []string{"1.1.1.1, 203.0.113.9"}, r, "203.0.113.9"},
		{"a chain of trusted proxies", "10.1.2.3:1", []string{"203.0.113.9, 10.9.9.9", "10.8.8.8"}, r, "203.0.113.9"},
		{"garbage stops the walk", "10.1.2.3:1", []string{"203.0.113.9, nonsense"}, r, "10.1.2.3"},
		{"IPv4-mapped IPv6 peer", "[::ffff:10.1.2.3]:1", []string{"203.0.113.9"}, r, "203.0.113.9"},
	} {
		req := &http.Request{RemoteAddr: c.peer, Header: http.Header{}}
		for _, h := range c.xff {
			req.Header.Add("X-Forwarded-For", h)
		}
		if got := c.res.Addr(req); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	if _, err := New([]string{"not-a-cidr"}); err == nil {
		t.Errorf("a bad CIDR was taken")
	}
}
