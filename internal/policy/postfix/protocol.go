package postfix

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Request is one policy delegation request: the attributes Postfix sent,
// by name. Attributes aupd does not use are kept and ignored.
type Request map[string]string

// The attributes aupd reads (postfix.org SMTPD_POLICY_README).
const (
	attrRequest       = "request"        // always smtpd_access_policy
	attrProtocolState = "protocol_state" // CONNECT, EHLO, HELO, MAIL, RCPT, DATA, END-OF-MESSAGE, VRFY, ETRN
	attrRecipient     = "recipient"      // set in RCPT; in DATA and END-OF-MESSAGE only with one recipient
	attrSender        = "sender"
	attrSASLUsername  = "sasl_username" // the SASL login name; empty without SMTP AUTH
	attrQueueID       = "queue_id"
	attrClientAddress = "client_address"
	// instance is Postfix's id of one mail transaction: the same in every
	// request about one message, and when Postfix asks again.
	attrInstance       = "instance"
	attrRecipientCount = "recipient_count" // accepted recipients, in DATA and END-OF-MESSAGE
)

// requestAccessPolicy is the only request type Postfix sends.
const requestAccessPolicy = "smtpd_access_policy"

// limits bounds what one request may hold.
type limits struct {
	maxLine, maxRequest, maxAttrs int
}

// errProtocol marks input that is not the policy protocol; the connection
// is answered once and closed.
var errProtocol = errors.New("policy protocol violation")

// readRequest reads one request: name=value lines ended by an empty line.
// It returns io.EOF when the peer closed the connection between requests.
// Lines longer than maxLine, requests larger than maxRequest or with more
// than maxAttrs attributes, and lines without "=" are protocol errors. A
// trailing CR is removed, so that a human can talk to the server with
// telnet. A repeated attribute keeps its last value.
func readRequest(r *bufio.Reader, lim limits) (Request, error) {
	req := Request{}
	total := 0
	first := true
	for {
		line, err := readLine(r, lim.maxLine)
		if err != nil {
			if errors.Is(err, io.EOF) && first && len(line) == 0 {
				return nil, io.EOF
			}
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: connection closed inside a request", errProtocol)
			}
			return nil, err
		}
		first = false
		total += len(line) + 1
		if total > lim.maxRequest {
			return nil, fmt.Errorf("%w: request larger than %d bytes", errProtocol, lim.maxRequest)
		}
		if len(line) == 0 {
			return req, nil
		}
		name, value, ok := bytes.Cut(line, []byte{'='})
		if !ok || len(name) == 0 {
			return nil, fmt.Errorf("%w: line is not name=value", errProtocol)
		}
		if _, dup := req[string(name)]; !dup && len(req) >= lim.maxAttrs {
			return nil, fmt.Errorf("%w: more than %d attributes", errProtocol, lim.maxAttrs)
		}
		req[string(name)] = string(value)
	}
}

// readLine reads one LF-terminated line of at most max bytes, without the
// LF and an optional CR before it.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > max+2 { // room for CR LF
			return nil, fmt.Errorf("%w: line longer than %d bytes", errProtocol, max)
		}
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return line, err
	}
	line = bytes.TrimSuffix(line, []byte{'\n'})
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if len(line) > max {
		return nil, fmt.Errorf("%w: line longer than %d bytes", errProtocol, max)
	}
	return line, nil
}

// formatReply renders the reply to one request: a single action attribute
// and the empty line that ends it. Bytes that could break the framing are
// replaced, so that the reply is always exactly one line.
func formatReply(action string) []byte {
	b := make([]byte, 0, len(action)+10)
	b = append(b, "action="...)
	for i := 0; i < len(action); i++ {
		c := action[i]
		if c < 0x20 || c > 0x7e {
			c = ' '
		}
		b = append(b, c)
	}
	return append(b, '\n', '\n')
}
