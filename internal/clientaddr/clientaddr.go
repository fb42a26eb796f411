// Package clientaddr finds the address of the client of an HTTP request:
// the peer's, or, when the peer is a trusted proxy (http.trusted_proxies),
// the address that proxy put in X-Forwarded-For. It is what the limits of
// failed authentication count by.
package clientaddr

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Resolver finds client addresses. The zero value (and nil) trusts no
// proxy: X-Forwarded-For is never believed.
type Resolver struct {
	trusted []netip.Prefix
}

// New returns a Resolver that believes the X-Forwarded-For of peers in
// the CIDRs (a bare address is a /32 or /128).
func New(cidrs []string) (*Resolver, error) {
	r := &Resolver{}
	for _, c := range cidrs {
		c = strings.TrimSpace(c)
		var p netip.Prefix
		var err error
		if strings.Contains(c, "/") {
			p, err = netip.ParsePrefix(c)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(c); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: not an address or CIDR", c)
		}
		r.trusted = append(r.trusted, p.Masked())
	}
	return r, nil
}

func (r *Resolver) trusts(a netip.Addr) bool {
	if r == nil {
		return false
	}
	a = a.Unmap()
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Addr returns the client's address of req. The peer's address, unless
// the peer is a trusted proxy: then X-Forwarded-For is read from its end
// (the entry the nearest proxy added) back, past the trusted proxies, and
// the first address that is not one is the client's. Entries a client
// wrote itself come before it and are never reached. A malformed entry
// stops the walk at the last address known good.
func (r *Resolver) Addr(req *http.Request) string {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		host = req.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap()
	client := peer
	if !r.trusts(peer) {
		return client.String()
	}
	var hops []string
	for _, h := range req.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		client = a.Unmap()
		if !r.trusts(client) {
			break
		}
	}
	return client.String()
}
