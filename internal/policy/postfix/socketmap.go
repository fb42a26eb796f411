package postfix

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/aupd/aupd/rules"
)

// The transport map server answers Postfix's socketmap protocol
// (socketmap_table(5)): a request is a netstring "<name> <key>", the reply
// a netstring "OK <value>", "NOTFOUND ", "TEMP <reason>" or "PERM
// <reason>". Postfix's queue manager looks every recipient of every message
// up in transport_maps once the message is in the queue, after
// virtual_alias_maps expansion and whatever way it came in (SMTP,
// sendmail/pickup, a forward), so this lookup holds where the RCPT-time
// policy check cannot look: aliases and local injection.
//
// For a mailbox that may not receive it answers an error(8) or retry(8)
// transport: "error:5.2.1 Mailbox is closed" bounces the message to its
// sender, "retry:4.2.1 ..." keeps it in the queue until the maintenance
// ends. Anything else is NOTFOUND, and Postfix's other transport settings
// apply.

// The result label values of aupd_policy_requests_total{server="postfix_transport"}.
const transportServerName = "postfix_transport"

// maxNetstring bounds a socketmap request (Postfix sends an address).
const maxNetstring = 4096

// ServeTransport serves the transport map on ln until ctx is done; it
// shares MaxConnections with the policy server.
func (s *Server) ServeTransport(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, s.sem, s.metrics, s.log, "postfix transport map", s.serveTransportConn)
}

func (s *Server) serveTransportConn(ctx context.Context, conn net.Conn) {
	s.eachRequest(ctx, conn, 1024, func(r *bufio.Reader) bool {
		req, err := readNetstring(r, maxNetstring)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.log.Warn("closing transport map connection", "remote", conn.RemoteAddr().String(), "err", err)
				s.metrics.requests.WithLabelValues(transportServerName, ResultProtocolError).Inc()
				_, _ = conn.Write(netstring("PERM protocol error"))
			}
			return false
		}
		start := time.Now()
		reply, result := s.TransportLookup(ctx, req)
		s.metrics.requests.WithLabelValues(transportServerName, result).Inc()
		s.metrics.latency.WithLabelValues(transportServerName).Observe(time.Since(start).Seconds())
		_, err = conn.Write(netstring(reply))
		return err == nil
	})
}

// TransportLookup answers one socketmap request "<name> <key>": the reply
// (without the netstring framing) and the result label. The map name is
// not checked (the server has one map). Keys that are not an address
// (Postfix also looks up the domain) are NOTFOUND.
func (s *Server) TransportLookup(ctx context.Context, request string) (reply, result string) {
	_, key, ok := strings.Cut(request, " ")
	if !ok || !strings.Contains(key, "@") {
		return "NOTFOUND ", ResultDunno
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LookupTimeout)
	defer cancel()
	d, acct, err := s.recipient(ctx, key, s.now())
	if err != nil {
		s.log.Error("transport lookup", "account", acct, "err", err)
		// Postfix defers the message and tries again.
		return "TEMP account lookup failed", ResultError
	}
	switch d.Result {
	case rules.Bounce, rules.Deny:
		if d.Code == rules.CodeClosed {
			return "OK error:" + dsnText(s.cfg.ClosedAction), ResultClosed
		}
		return "OK error:" + dsnText(s.cfg.ReceiveSuspendedAction), ResultReceiveSuspended
	case rules.Defer:
		return "OK retry:" + dsnText(s.cfg.MaintenanceAction), ResultMaintenance
	}
	return "NOTFOUND ", ResultDunno
}

// dsnText turns an access(5) action "550 5.2.1 text" into the next hop of
// the error(8) transport, "5.2.1 text".
func dsnText(action string) string {
	if len(action) > 4 && action[3] == ' ' {
		return action[4:]
	}
	return action
}

// readNetstring reads one netstring "<len>:<data>,".
func readNetstring(r *bufio.Reader, max int) (string, error) {
	head, err := r.ReadSlice(':')
	if err != nil {
		if errors.Is(err, io.EOF) && len(head) == 0 {
			return "", io.EOF
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", errors.New("netstring length too long")
		}
		return "", fmt.Errorf("netstring length: %w", err)
	}
	n, err := strconv.Atoi(string(head[:len(head)-1]))
	if err != nil || n < 0 || len(head) > 8 {
		return "", fmt.Errorf("netstring length %q", head)
	}
	if n > max {
		return "", fmt.Errorf("netstring of %d bytes, more than %d", n, max)
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", fmt.Errorf("netstring data: %w", err)
	}
	if buf[n] != ',' {
		return "", errors.New("netstring does not end with a comma")
	}
	return string(buf[:n]), nil
}

func netstring(s string) []byte {
	return []byte(strconv.Itoa(len(s)) + ":" + s + ",")
}
