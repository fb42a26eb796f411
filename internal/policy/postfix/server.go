// Package postfix is aupd's Postfix SMTP access policy delegation server
// (postfix.org SMTPD_POLICY_README). Postfix asks it, once per recipient,
// whether to accept mail: from an authenticated sender whose sending is
// suspended it is refused with 5.7.1, and mail to a local account follows
// that account's state (closed: 5.2.1 bounce; receive suspended: permanent
// reject; maintenance: 4.2.1 temporary failure, so the sending MTA queues
// it; anything else: DUNNO, which leaves the decision to the rest of
// Postfix's restrictions). Every decision is rules.Decide's.
package postfix

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// Accounts looks up accounts' states. It is implemented by the account
// store.
type Accounts interface {
	// LookupAll returns the state of each of accounts (normalized,
	// lower-case addresses), in order, in one round trip to the store:
	// a request's sender and recipient cost one wait, not two.
	LookupAll(ctx context.Context, accounts ...string) ([]Account, error)
}

// Account is what Accounts.LookupAll knows of one account.
type Account struct {
	View rules.AccountView
	// Governed reports whether aupd governs the address: its domain
	// belongs to a company of this provider, or aupd holds a record of it
	// (a suspension or a status), whatever its domain. When it is false
	// the view is ignored. An unknown mailbox in a company's domain is
	// governed, with a zero view (active), so that Postfix's own
	// recipient checks decide.
	Governed bool
	// Version is the state's version, which the volume count checks.
	Version int64
	// Throttled says that the state holds a volume throttle's marker: a
	// throttle may hold the sender back (Volume.Throttle decides).
	Throttled bool
}

// Volume counts what authenticated senders send, at END-OF-MESSAGE, and
// holds back those a volume throttle holds (docs/postfix.md, "Volume
// limits"). It is implemented by internal/policy/volume.
type Volume interface {
	// Limited reports whether the account has volume limits: its
	// messages are counted, and its throttles are checked.
	Limited(account string) bool
	// Throttle names the volume limit whose throttle holds the account
	// back, or returns ""; the server asks only when the account's state
	// has the throttle's marker (Account.Throttled).
	Throttle(ctx context.Context, account string) (string, error)
	// Count counts a message that the sender check allowed on the state
	// at m.Version (or, with VersionUnchecked, asks for that check).
	Count(ctx context.Context, m Message) (CountResult, error)
	// CountedBefore reports whether the message was counted already:
	// Postfix asking again about a message it was told to accept.
	CountedBefore(ctx context.Context, m Message) (bool, error)
}

// VersionUnchecked is Message.Version when no sender check was made.
const VersionUnchecked = -1

// Message is one message Postfix committed to (END-OF-MESSAGE).
type Message struct {
	Account    string
	Instance   string // Postfix's id of the mail transaction
	QueueID    string
	Client     string // client_address
	Recipients int
	Version    int64
}

// CountOutcome is what became of a message Volume.Count was given.
type CountOutcome int

// The outcomes of Volume.Count.
const (
	Counted   CountOutcome = iota + 1 // counted, or the account has no limits
	Duplicate                         // counted before
	Throttled                         // held back by a throttle, not counted
	Changed                           // not counted: check the sender again
)

// CountResult is the outcome of Volume.Count.
type CountResult struct {
	Outcome  CountOutcome
	Throttle string // the limit whose throttle held the message back
}

// The result label values of aupd_policy_requests_total for this server.
const (
	ResultDunno            = "dunno"
	ResultThrottled        = "throttled"
	ResultSendSuspended    = "send_suspended"
	ResultClosed           = "closed"
	ResultReceiveSuspended = "receive_suspended"
	ResultMaintenance      = "maintenance"
	ResultError            = "error"
	ResultProtocolError    = "protocol_error"
)

// Options are a Server's collaborators.
type Options struct {
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
	Now        func() time.Time      // nil: time.Now
	// Volume counts authenticated senders' messages and throttles them;
	// nil: nothing is counted (no volume limits are configured).
	Volume Volume
}

// Server answers Postfix policy delegation requests.
type Server struct {
	cfg      Config
	accounts Accounts
	volume   Volume
	log      *slog.Logger
	now      func() time.Time
	metrics  *metrics
	lim      limits
	sem      chan struct{}
}

// New returns a server. cfg is completed with Defaults and validated.
func New(cfg Config, accounts Accounts, opts Options) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if accounts == nil {
		return nil, errors.New("postfix policy: nil Accounts")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("postfix policy: %w", err)
	}
	return &Server{
		cfg:      cfg,
		accounts: accounts,
		volume:   opts.Volume,
		log:      log.With("component", "policy.postfix"),
		now:      now,
		metrics:  m,
		lim:      limits{maxLine: cfg.MaxLineBytes, maxRequest: cfg.MaxRequestBytes, maxAttrs: cfg.MaxAttributes},
		sem:      make(chan struct{}, cfg.MaxConnections),
	}, nil
}

// Run listens on the configured TCP address and, if set, the unix socket,
// and serves both until ctx is done. It returns nil after a clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	tcp, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("postfix policy: listen: %w", err)
	}
	listeners := []net.Listener{tcp}
	if s.cfg.UnixSocket != "" {
		if err := removeStaleSocket(s.cfg.UnixSocket); err != nil {
			tcp.Close()
			return fmt.Errorf("postfix policy: %w", err)
		}
		ux, err := lc.Listen(ctx, "unix", s.cfg.UnixSocket)
		if err != nil {
			tcp.Close()
			return fmt.Errorf("postfix policy: listen: %w", err)
		}
		if err := os.Chmod(s.cfg.UnixSocket, os.FileMode(s.cfg.UnixSocketMode)); err != nil {
			tcp.Close()
			ux.Close()
			return fmt.Errorf("postfix policy: chmod unix socket: %w", err)
		}
		listeners = append(listeners, ux)
	}
	errs := make(chan error, len(listeners)+1)
	n := len(listeners)
	for _, ln := range listeners {
		go func() { errs <- s.Serve(ctx, ln) }()
	}
	if s.cfg.TransportListen != "" {
		tln, err := lc.Listen(ctx, "tcp", s.cfg.TransportListen)
		if err != nil {
			for _, ln := range listeners {
				ln.Close()
			}
			// The servers started above end now that their listeners
			// are closed.
			var ended error
			for range n {
				ended = errors.Join(ended, <-errs)
			}
			return errors.Join(fmt.Errorf("postfix transport map: listen: %w", err), ended)
		}
		n++
		go func() { errs <- s.ServeTransport(ctx, tln) }()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// removeStaleSocket removes a unix socket left by an earlier run. Anything
// else at the path is left alone, and Listen reports it.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// Serve accepts connections on ln until ctx is done, then closes ln and
// every connection, and returns once all connection goroutines have ended.
// At most MaxConnections connections are served at once; a connection
// beyond that is closed at once (Postfix then applies
// smtpd_policy_service_default_action, or tries again) rather than left
// waiting unanswered.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, s.sem, s.metrics, s.log, "postfix policy", s.serveConn)
}

// serve is the accept loop of the policy and transport map servers.
func serve(ctx context.Context, ln net.Listener, sem chan struct{}, m *metrics, log *slog.Logger, what string, handle func(context.Context, net.Conn)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("%s: accept: %w", what, err)
		}
		select {
		case sem <- struct{}{}:
		default:
			m.refused.Inc()
			log.Warn("connection refused: max_connections reached", "remote", conn.RemoteAddr().String())
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			handle(ctx, conn)
		}()
	}
}

// serveConn answers requests on one connection until the peer closes it,
// it stays idle too long, it breaks the protocol or ctx is done.
func (s *Server) serveConn(ctx context.Context, conn net.Conn) {
	s.metrics.conns.Inc()
	defer s.metrics.conns.Dec()
	var sess session
	s.eachRequest(ctx, conn, 4096, func(r *bufio.Reader) bool {
		req, err := readRequest(r, s.lim)
		if err != nil {
			if errors.Is(err, errProtocol) {
				s.log.Warn("closing policy connection", "remote", conn.RemoteAddr().String(), "err", err)
				s.metrics.requests.WithLabelValues(serverName, ResultProtocolError).Inc()
				// Answer once, so that Postfix applies the error action
				// rather than its generic "server configuration problem".
				_, _ = conn.Write(formatReply(s.cfg.ErrorAction))
				lingerClose(conn)
			}
			return false
		}
		start := time.Now()
		action, result := s.decide(ctx, req, &sess)
		s.metrics.requests.WithLabelValues(serverName, result).Inc()
		s.metrics.latency.WithLabelValues(serverName).Observe(time.Since(start).Seconds())
		_, err = conn.Write(formatReply(action))
		return err == nil
	})
}

// eachRequest calls handle for each request on conn, and closes conn when
// the peer closes it, it stays idle past the idle timeout, ctx is done or
// handle returns false. It waits for a request's first byte under the idle
// timeout and gives handle the request timeout to read and answer it.
func (s *Server) eachRequest(ctx context.Context, conn net.Conn, bufSize int, handle func(*bufio.Reader) bool) {
	defer conn.Close()
	// Closing the connection interrupts a blocked read at shutdown.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r := bufio.NewReaderSize(conn, bufSize)
	for {
		if err := conn.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout)); err != nil {
			return
		}
		if _, err := r.Peek(1); err != nil {
			return
		}
		if err := conn.SetDeadline(time.Now().Add(s.cfg.RequestTimeout)); err != nil {
			return
		}
		if !handle(r) {
			return
		}
	}
}

// lingerClose half-closes conn and discards what the peer still sends for
// a moment, so that the reply already written is not lost to a reset.
func lingerClose(conn net.Conn) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 1<<20))
}

// Decide answers one request: the action for Postfix and the result label.
// It is safe for concurrent use.
func (s *Server) Decide(ctx context.Context, req Request) (action, result string) {
	return s.decide(ctx, req, nil)
}

// session is what one policy connection remembers between requests: the
// sender check of the mail transaction in progress (Postfix asks about one
// transaction at a time on a connection, in order), so that counting its
// message at END-OF-MESSAGE needs no second look at the sender.
type session struct {
	account, instance string
	version           int64
}

// remember records that the sender check allowed account's transaction
// instance on its state at version.
func (ss *session) remember(account, instance string, version int64) {
	if ss == nil || instance == "" {
		return
	}
	ss.account, ss.instance, ss.version = account, instance, version
}

// checked returns the version of the sender check of the transaction, or
// VersionUnchecked.
func (ss *session) checked(account, instance string) int64 {
	if ss == nil || instance == "" || ss.instance != instance || ss.account != account {
		return VersionUnchecked
	}
	return ss.version
}

func (s *Server) decide(ctx context.Context, req Request, sess *session) (action, result string) {
	if req[attrRequest] != requestAccessPolicy {
		return "DUNNO", ResultDunno
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LookupTimeout)
	defer cancel()
	now := s.now()
	state := strings.ToUpper(req[attrProtocolState])

	// An authenticated submission: the SASL login is the account that
	// sends, whatever envelope sender it claims.
	var sender string
	if user := req[attrSASLUsername]; user != "" && sendState(state) {
		acct, err := events.NormalizeAccount(user)
		if err != nil {
			// Not an address; aupd's accounts are addresses, so there
			// is nothing to check.
			s.log.Debug("sasl_username is not an address", "sasl_username", clip(user), "err", err)
		} else {
			sender = acct
		}
	}
	limited := sender != "" && s.volume != nil && s.volume.Limited(sender)
	if limited && state == "END-OF-MESSAGE" {
		return s.endOfMessage(ctx, req, sender, now, sess)
	}
	var rcpt string // the recipient, normalized
	if state == "RCPT" && req[attrRecipient] != "" {
		rcpt, _ = events.NormalizeAccount(req[attrRecipient])
	}
	if sender == "" && rcpt == "" {
		return "DUNNO", ResultDunno
	}

	// The sender and the recipient's forms, in one round trip.
	var names []string
	if sender != "" {
		names = append(names, sender)
	}
	if rcpt != "" {
		names = append(names, s.recipientForms(rcpt)...)
	}
	looked, err := s.accounts.LookupAll(ctx, names...)
	if err != nil {
		if sender != "" {
			s.log.Error("look up sender", "account", sender, "queue_id", req[attrQueueID], "err", err)
		} else {
			s.log.Error("look up recipient", "account", rcpt, "queue_id", req[attrQueueID], "err", err)
		}
		return s.cfg.ErrorAction, ResultError
	}
	if sender != "" {
		a := looked[0]
		looked = looked[1:]
		if action, result, refused := s.refuseSender(ctx, req, sender, a, limited, now); refused {
			return action, result
		}
		if limited {
			sess.remember(sender, req[attrInstance], a.Version)
		}
	}
	if rcpt == "" {
		return "DUNNO", ResultDunno
	}
	switch d := receive(looked, now); d.Result {
	case rules.Bounce, rules.Deny:
		if d.Code == rules.CodeClosed {
			return s.cfg.ClosedAction, ResultClosed
		}
		return s.cfg.ReceiveSuspendedAction, ResultReceiveSuspended
	case rules.Defer:
		return s.cfg.MaintenanceAction, ResultMaintenance
	}
	return "DUNNO", ResultDunno
}

// refuseSender answers a sender that may not send now: its state denies
// it, or, when it has volume limits, a throttle holds it back.
func (s *Server) refuseSender(ctx context.Context, req Request, acct string, a Account, limited bool, now time.Time) (action, result string, refused bool) {
	if a.Governed {
		if d := rules.Decide(a.View, rules.SendSMTP, now); d.Result != rules.Allow {
			s.log.Info("submission refused", "account", acct, "code", d.Code,
				"queue_id", req[attrQueueID], "client", req[attrClientAddress])
			return s.cfg.SendSuspendedAction, ResultSendSuspended, true
		}
	}
	if !limited || !a.Throttled {
		return "", "", false
	}
	limit, err := s.volume.Throttle(ctx, acct)
	if err != nil {
		s.log.Error("look up sender", "account", acct, "queue_id", req[attrQueueID], "err", err)
		return s.cfg.ErrorAction, ResultError, true
	}
	if limit != "" {
		s.log.Info("submission throttled", "account", acct, "limit", limit,
			"queue_id", req[attrQueueID], "client", req[attrClientAddress])
		return s.cfg.VolumeThrottleAction, ResultThrottled, true
	}
	return "", "", false
}

// endOfMessage counts a message Postfix has committed to, once, and
// answers DUNNO, unless the sender may no longer send: its state changed
// since the transaction's sender check, or a throttle started meanwhile
// (another connection's message crossed a limit). The message that
// crosses a limit is accepted: it was counted.
func (s *Server) endOfMessage(ctx context.Context, req Request, acct string, now time.Time, sess *session) (action, result string) {
	n, _ := strconv.Atoi(req[attrRecipientCount])
	m := Message{Account: acct, Instance: req[attrInstance], QueueID: req[attrQueueID], Client: req[attrClientAddress],
		Recipients: n, Version: sess.checked(acct, req[attrInstance])}
	for range 3 {
		if m.Version == VersionUnchecked {
			looked, err := s.accounts.LookupAll(ctx, acct)
			if err != nil {
				s.log.Error("look up sender", "account", acct, "queue_id", m.QueueID, "err", err)
				return s.cfg.ErrorAction, ResultError
			}
			if action, result, refused := s.refuseSender(ctx, req, acct, looked[0], true, now); refused {
				if result == ResultError {
					return action, result
				}
				// Unless Postfix asks again about a message it was
				// told to accept, and that was counted.
				dup, err := s.volume.CountedBefore(ctx, m)
				if err != nil {
					s.log.Error("count message", "account", acct, "queue_id", m.QueueID, "err", err)
					return s.cfg.ErrorAction, ResultError
				}
				if dup {
					return "DUNNO", ResultDunno
				}
				return action, result
			}
			m.Version = looked[0].Version
		}
		c, err := s.volume.Count(ctx, m)
		if err != nil {
			s.log.Error("count message", "account", acct, "queue_id", m.QueueID, "err", err)
			return s.cfg.ErrorAction, ResultError
		}
		switch c.Outcome {
		case Counted, Duplicate:
			return "DUNNO", ResultDunno
		case Throttled:
			s.log.Info("submission throttled", "account", acct, "limit", c.Throttle,
				"queue_id", m.QueueID, "client", m.Client)
			return s.cfg.VolumeThrottleAction, ResultThrottled
		}
		m.Version = VersionUnchecked
	}
	// The sender's state changed under every attempt.
	s.log.Error("count message", "account", acct, "queue_id", m.QueueID, "err", "the account changed concurrently")
	return s.cfg.ErrorAction, ResultError
}

// recipient decides whether mail for address may be delivered. The
// address is compared case-insensitively, and an address with an
// extension (user+tag@domain, with the configured recipient_delimiter) is
// judged as the stricter of the address as written and the address without
// its extension, so that "erin+tag" cannot reach a closed "erin" while a
// mailbox whose name really contains the delimiter keeps its own state.
// Addresses aupd does not govern, or not addresses, are allowed (Postfix
// decides). acct is the normalized address, for logs.
func (s *Server) recipient(ctx context.Context, address string, now time.Time) (d rules.Decision, acct string, err error) {
	acct, nerr := events.NormalizeAccount(address)
	if nerr != nil {
		return rules.Decision{Result: rules.Allow}, "", nil
	}
	looked, err := s.accounts.LookupAll(ctx, s.recipientForms(acct)...)
	if err != nil {
		return rules.Decision{Result: rules.Allow}, acct, err
	}
	return receive(looked, now), acct, nil
}

// receive is the stricter receive decision of a recipient's forms
// (recipientForms). A form aupd does not govern is skipped: another form
// may still be governed (a record of "erin" outside every company's
// domains, asked about as "erin+tag").
func receive(forms []Account, now time.Time) rules.Decision {
	d := rules.Decision{Result: rules.Allow}
	for _, a := range forms {
		if !a.Governed {
			continue
		}
		if got := rules.Decide(a.View, rules.Receive, now); severity(got) > severity(d) {
			d = got
		}
	}
	return d
}

// recipientForms returns acct and, when its local part has an extension,
// acct without it.
func (s *Server) recipientForms(acct string) []string {
	forms := []string{acct}
	delim := s.cfg.delimiters()
	if delim == "" {
		return forms
	}
	at := strings.LastIndexByte(acct, '@')
	local, domain := acct[:at], acct[at:]
	if i := strings.IndexAny(local, delim); i > 0 {
		forms = append(forms, local[:i]+domain)
	}
	return forms
}

// severity orders receive decisions: a bounce over a deferral over
// delivery.
func severity(d rules.Decision) int {
	switch d.Result {
	case rules.Bounce, rules.Deny:
		if d.Code == rules.CodeClosed {
			return 4
		}
		return 3
	case rules.Defer:
		return 2
	}
	return 0
}

// sendState reports whether a request in state is about a message being
// sent: MAIL, RCPT, DATA, END-OF-MESSAGE (and BDAT for CHUNKING). CONNECT,
// HELO/EHLO, VRFY and ETRN carry no message.
func sendState(state string) bool {
	switch state {
	case "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "BDAT":
		return true
	}
	return false
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
