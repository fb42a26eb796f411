package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/jsutil"
)

// startEmbedded starts the embedded NATS server with JetStream, on the
// configured loopback address, storing under the data directory. The
// options it returns are the server's, for stopEmbedded.
func startEmbedded(cfg *config.Config) (*server.Server, *server.Options, error) {
	host, portStr, err := net.SplitHostPort(cfg.NATS.Embedded.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("nats.embedded.listen: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, nil, fmt.Errorf("nats.embedded.listen: port %q", portStr)
	}
	probe, err := net.Listen("tcp", cfg.NATS.Embedded.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded nats cannot listen on %s: %w (set nats.embedded.listen / %s to a free address, or nats.url / %s to use a running server)", cfg.NATS.Embedded.Listen, err, config.EnvNATSEmbeddedListen, config.EnvNATSURL)
	}
	probe.Close()
	dir := cfg.NATS.Embedded.StoreDir
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "nats")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("nats store dir: %w", err)
	}
	opts := embeddedOptions(host, port, dir)
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, nil, fmt.Errorf("embedded nats on %s did not start (is the port taken? set nats.url to use a running server)", cfg.NATS.Embedded.Listen)
	}
	return ns, opts, nil
}

// embeddedOptions are the embedded server's options; stopEmbedded reloads
// them with one change.
func embeddedOptions(host string, port int, dir string) *server.Options {
	return &server.Options{
		ServerName: "aupd-embedded", Host: host, Port: port,
		JetStream: true, StoreDir: dir, NoSigs: true, MaxPayload: 8 << 20,
	}
}

// stopEmbedded stops the embedded server without losing what it has
// received. Server.Shutdown stops JetStream first and drops the messages
// a stream has received but not yet stored (a core-NATS publisher's flush
// had succeeded for them), so the stop goes in the order of a lame duck,
// but with a store step between:
//
//  1. refuse new connections and close the publishers' ones (a reload
//     with max_connections below zero: nats-server then accepts no
//     client), so that nothing more comes in;
//  2. wait until every stream's state has stopped changing, that is
//     until JetStream has stored what it had received, bounded by
//     timeout;
//  3. shut the server down.
//
// aupd's own consumers and connection are done before this is called.
func stopEmbedded(ns *server.Server, opts *server.Options, timeout time.Duration, log *slog.Logger) {
	refuse := opts.Clone()
	refuse.MaxConn = -1
	if err := ns.ReloadOptions(refuse); err != nil {
		log.Warn("embedded nats: refuse new clients before the stop", "err", err)
	}
	if n, err := waitStored(ns, timeout); err != nil {
		log.Warn("embedded nats: JetStream still storing at the stop", "err", err, "stored", n)
	} else {
		log.Info("embedded nats: JetStream stored what it received", "messages", n)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
}

// storeQuiet is how long every stream's state must stay unchanged for
// JetStream to count as having stored its input. A stream stores tens of
// thousands of messages a second, so a backlog never pauses this long.
const storeQuiet = time.Second

// waitStored waits until the state of every stream stays the same for
// storeQuiet, and returns the number of messages stored.
func waitStored(ns *server.Server, timeout time.Duration) (uint64, error) {
	deadline := time.Now().Add(timeout)
	state := func() (string, uint64, error) {
		jsi, err := ns.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
		if err != nil {
			return "", 0, err
		}
		var parts []string
		var n uint64
		for _, acc := range jsi.AccountDetails {
			for _, st := range acc.Streams {
				parts = append(parts, fmt.Sprintf("%s/%s:%d:%d", acc.Name, st.Name, st.State.LastSeq, st.State.Msgs))
				n += st.State.Msgs
			}
		}
		// Jsz lists accounts and streams in no fixed order.
		slices.Sort(parts)
		return strings.Join(parts, ";"), n, nil
	}
	last, n, err := state()
	if err != nil {
		return 0, err
	}
	since := time.Now()
	for time.Since(since) < storeQuiet {
		if time.Now().After(deadline) {
			return n, fmt.Errorf("streams still growing after %s", timeout)
		}
		time.Sleep(storeQuiet / 10)
		cur, m, err := state()
		if err != nil {
			return n, err
		}
		if cur != last {
			last, n, since = cur, m, time.Now()
		}
	}
	return n, nil
}

// connect opens the NATS connection from the config.
func connect(cfg config.NATS, url, name string, log *slog.Logger) (*nats.Conn, error) {
	opts := append(natsLogOptions(log),
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(false),
	)
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, string(cfg.Password)))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(string(cfg.Token)))
	}
	if cfg.TLS.Enabled() {
		tc, err := tlsConfig(cfg.TLS)
		if err != nil {
			return nil, fmt.Errorf("nats tls: %w", err)
		}
		opts = append(opts, nats.Secure(tc))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, config.RedactError(fmt.Errorf("connect nats %s: %w", config.RedactURL(url), err), url)
	}
	return nc, nil
}

func tlsConfig(t config.TLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // operator's choice
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificates in %s", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Subjects each stream captures.
var (
	verdictSubjects = []string{events.SubjectPrefix + ">"}
	accountSubjects = []string{events.AccountSubjectPrefix + ">"}
	deadSubjects    = []string{"aup.dlq.>"}
)

// EnsureStream creates a stream when it is missing. An existing stream is
// never changed, so that no setting here can delete data in it.
func EnsureStream(ctx context.Context, js jetstream.JetStream, s config.Stream, subjects []string) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, s.Name)
	if err == nil {
		return st, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("look up stream %s: %w", s.Name, err)
	}
	storage := jetstream.FileStorage
	if s.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	st, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: s.Name, Subjects: subjects, Retention: jetstream.LimitsPolicy,
		MaxAge: s.MaxAge, MaxBytes: s.MaxBytes, Storage: storage, Replicas: s.Replicas,
		Duplicates: s.Duplicate, Discard: jetstream.DiscardOld, MaxMsgSize: events.MaxPayload,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.Stream(ctx, s.Name) // another aupd process created it
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", s.Name, err)
	}
	return st, nil
}

// VerdictConsumer creates or binds the durable verdict consumer. It
// filters on the verdict subjects only when the stream also holds others:
// a filter the stream makes redundant still costs NATS 2.9 a filtered
// lookup per delivery, which more than halved the pace of a backlog drain
// on Debian's nats-server 2.9.10.
func VerdictConsumer(ctx context.Context, js jetstream.JetStream, stream string, c config.Consumer) (jetstream.Consumer, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	filter := ""
	if !onlyVerdicts(st.CachedInfo().Config.Subjects) {
		filter = events.SubjectPrefix + ">"
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       c.Durable,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxAckPending: c.MaxAckPending,
		MaxDeliver:    c.MaxDeliver,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", c.Durable, stream, err)
	}
	return cons, nil
}

// onlyVerdicts reports whether every subject a stream captures is a
// verdict subject (under aup.verdict.), so that its consumer needs no
// filter.
func onlyVerdicts(subjects []string) bool {
	for _, s := range subjects {
		if !strings.HasPrefix(s, events.SubjectPrefix) {
			return false
		}
	}
	return len(subjects) > 0
}

// jsPublisher publishes account events to JetStream and waits for the ack.
type jsPublisher struct{ js jetstream.JetStream }

// publishTimeout bounds the wait for JetStream's acks.
const publishTimeout = 10 * time.Second

func accountMsg(ev *events.AccountEvent, data []byte) *nats.Msg {
	m := nats.NewMsg(events.AccountSubjectPrefix + ev.Type)
	m.Data = data
	m.Header.Set(nats.MsgIdHdr, ev.ID)
	return m
}

func (p jsPublisher) PublishAccountEvent(ctx context.Context, ev *events.AccountEvent, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	_, err := p.js.PublishMsg(ctx, accountMsg(ev, data))
	return err
}

// PublishAccountEvents publishes every event asynchronously, then waits
// once for all the acks.
func (p jsPublisher) PublishAccountEvents(ctx context.Context, evs []*events.AccountEvent, data [][]byte) []error {
	msgs := make([]*nats.Msg, len(evs))
	for i, ev := range evs {
		msgs[i] = accountMsg(ev, data[i])
	}
	return jsutil.PublishAll(ctx, p.js, msgs, publishTimeout)
}

// watchMaxDeliveries counts JetStream's advisories that an event of the
// verdict consumer reached MaxDeliver. The consumer dead-letters an event
// at its last delivery itself, so an advisory means that could not happen
// (the dead letter failed too, or the event timed out at its last
// delivery): the event stays in its stream but is no longer delivered.
func watchMaxDeliveries(nc *nats.Conn, stream, durable string, reg prometheus.Registerer, log *slog.Logger) (*nats.Subscription, error) {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "aupd_max_deliveries_total",
		Help: "Advisories that a verdict event reached nats.consumer.max_deliver without being acked or dead-lettered.",
	})
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	subject := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + stream + "." + durable
	return nc.Subscribe(subject, func(m *nats.Msg) {
		c.Inc()
		log.Error("a verdict event reached max_deliver and is no longer delivered", "advisory", string(m.Data))
	})
}
