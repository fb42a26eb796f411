package sessionagent

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oklog/run"
	"golang.org/x/sys/unix"
)

// session is one lock the agent holds for a live imap or pop3 process.
// About 200 bytes of Go heap with its strings and its map and heap slots;
// the kernel adds a pidfd and an epoll item.
type session struct {
	entry
	fd  int       // the process's pidfd; -1 once the session ended
	due time.Time // the next renewal
	idx int       // index in the renewal heap
}

// Agent holds the mailbox session locks of one Dovecot host.
type Agent struct {
	cfg Config
	api *lockAPI
	log *slog.Logger

	epfd, wakefd int

	mu       sync.Mutex
	sessions map[int]*session // by pidfd
	due      dueHeap
	jr       *journal
	kick     chan struct{} // the earliest renewal changed
	rel      []release     // releases to send
	relKick  chan struct{}
	inflight sync.WaitGroup
}

// release is a lock to give up, until its lease would have ended anyway.
type release struct {
	account, id string
	until       time.Time
}

// Options are the agent's optional collaborators.
type Options struct {
	Logger *slog.Logger // nil: discard
	// Token is aupd's API token; empty: read from Config.TokenFile.
	Token string
	// OnReady is called once the agent listens.
	OnReady func()
}

// Run runs the agent until ctx ends. Stopping keeps the locks: the next
// run re-adopts those whose processes still live and releases the others.
func Run(ctx context.Context, cfg Config, opts Options) error {
	cfg, err := cfg.Complete()
	if err != nil {
		return err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "sessionagent")
	token := opts.Token
	if token == "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return fmt.Errorf("token: %s is empty", cfg.TokenFile)
		}
	}
	a := &Agent{cfg: cfg, api: newLockAPI(cfg, token), log: log,
		sessions: map[int]*session{}, kick: make(chan struct{}, 1), relKick: make(chan struct{}, 1)}
	defer a.api.close()
	if a.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	defer unix.Close(a.epfd)
	if a.wakefd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	defer unix.Close(a.wakefd)
	if err := unix.EpollCtl(a.epfd, unix.EPOLL_CTL_ADD, a.wakefd,
		&unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(a.wakefd)}); err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	defer a.closeSessions()

	prev, err := readJournal(cfg.StateFile)
	if err != nil {
		return err
	}
	if a.jr, err = openJournal(cfg.StateFile, nil); err != nil {
		return err
	}
	defer a.jr.close()
	a.adopt(ctx, prev)

	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	_ = os.Remove(cfg.Socket)
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: cfg.Socket, Net: "unixpacket"})
	unix.Umask(old)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if err := os.Chmod(cfg.Socket, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("socket: %w", err)
	}
	log.Info("listening", "socket", cfg.Socket, "aupd", cfg.URL, "lease", cfg.Lease,
		"renew_every", cfg.RenewEvery, "adopted", len(a.sessions))
	if opts.OnReady != nil {
		opts.OnReady()
	}

	var g run.Group
	g.Add(func() error { return a.serve(ctx, ln) }, func(error) { ln.Close() })
	g.Add(a.watch, func(error) { _, _ = unix.Write(a.wakefd, []byte{1, 0, 0, 0, 0, 0, 0, 0}) })
	rctx, rcancel := context.WithCancel(ctx)
	g.Add(func() error { return a.renewLoop(rctx) }, func(error) { rcancel() })
	for range 4 {
		g.Add(func() error { return a.releaseLoop(rctx) }, func(error) { rcancel() })
	}
	g.Add(func() error { <-ctx.Done(); return nil }, func(error) { rcancel() })
	err = g.Run()
	a.inflight.Wait()
	return err
}

// Sessions returns how many locks the agent holds.
func (a *Agent) Sessions() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.sessions)
}

// adopt takes over the locks of a previous run: those whose process still
// lives are renewed (acquired again when their lease ran out), the others
// released.
func (a *Agent) adopt(ctx context.Context, prev map[string]entry) {
	var adopted, released int
	for _, e := range prev {
		fd, err := unix.PidfdOpen(e.PID, 0)
		if err == nil {
			// Opened first, checked after: a pid used again by another
			// process has another start time.
			if st, err := startTime(e.PID); err != nil || st != e.Start {
				unix.Close(fd)
				fd = -1
			}
		} else {
			fd = -1
		}
		if fd < 0 {
			a.queueRelease(e.Account, e.ID)
			released++
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
		err = a.api.renew(rctx, e.Account, e.ID)
		if errors.Is(err, errNotHeld) {
			var id string
			if id, err = a.api.acquire(rctx, e.Account, e.Protocol, "a session of the previous run"); err == nil {
				e.ID = id
			}
		}
		cancel()
		if err != nil && !isTransient(err) {
			a.log.Warn("session of the previous run not adopted", "account", e.Account, "pid", e.PID, "err", err)
			unix.Close(fd)
			continue
		}
		next := time.Now().Add(a.cfg.RenewEvery)
		if err != nil {
			next = time.Now().Add(a.cfg.RenewEvery / 10) // aupd did not answer
		}
		if err := a.add(e, fd, next); err != nil {
			a.log.Error("adopt", "account", e.Account, "err", err)
			unix.Close(fd)
			a.queueRelease(e.Account, e.ID)
			continue
		}
		adopted++
	}
	if len(prev) > 0 {
		a.log.Info("previous run's locks", "adopted", adopted, "released", released)
	}
}

// isTransient reports whether err is aupd or the network failing, as
// opposed to aupd's refusal.
func isTransient(err error) bool { return err != nil && !errors.Is(err, errInUse) }

// add watches a new session. Its first renewal is due at first.
func (a *Agent) add(e entry, fd int, first time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := &session{entry: e, fd: fd, due: first}
	if err := unix.EpollCtl(a.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	a.sessions[fd] = s
	heap.Push(&a.due, s)
	if err := a.jr.add(e); err != nil {
		a.log.Error("state file", "err", err)
	}
	if a.due[0] == s {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// watch waits for the sessions' processes to exit, in one epoll set, and
// releases their locks. It returns when the agent stops.
func (a *Agent) watch() error {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(a.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll: %w", err)
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == a.wakefd {
				return nil
			}
			a.ended(fd)
		}
	}
}

// ended releases the lock of the session whose process (pidfd fd) exited.
func (a *Agent) ended(fd int) {
	a.mu.Lock()
	s := a.sessions[fd]
	if s == nil {
		a.mu.Unlock()
		return
	}
	delete(a.sessions, fd)
	heap.Remove(&a.due, s.idx)
	// Out of the epoll set first: closing fd alone would leave it there
	// while another descriptor of the same pidfd is open (the login
	// program's, until it execs), and its events would then name a
	// number that a new session may have been given.
	_ = unix.EpollCtl(a.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	unix.Close(fd)
	s.fd = -1
	if err := a.jr.remove(s.ID, a.liveLocked); err != nil {
		a.log.Error("state file", "err", err)
	}
	a.mu.Unlock()
	a.queueRelease(s.Account, s.ID)
}

func (a *Agent) liveLocked() []entry {
	out := make([]entry, 0, len(a.sessions))
	for _, s := range a.sessions {
		out = append(out, s.entry)
	}
	return out
}

func (a *Agent) queueRelease(account, id string) {
	a.mu.Lock()
	a.rel = append(a.rel, release{account: account, id: id, until: time.Now().Add(a.cfg.Lease)})
	a.mu.Unlock()
	select {
	case a.relKick <- struct{}{}:
	default:
	}
}

// releaseLoop sends the queued releases; one that fails is tried again
// every few seconds until its lease would have ended.
func (a *Agent) releaseLoop(ctx context.Context) error {
	for {
		a.mu.Lock()
		var r release
		ok := len(a.rel) > 0
		if ok {
			r = a.rel[0]
			a.rel[0] = release{}
			a.rel = a.rel[1:]
		}
		more := len(a.rel) > 0
		a.mu.Unlock()
		if more {
			select {
			case a.relKick <- struct{}{}:
			default:
			}
		}
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case <-a.relKick:
			}
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
		err := a.api.release(rctx, r.account, r.id)
		cancel()
		switch {
		case err == nil:
			a.log.Debug("released", "account", r.account, "id", r.id)
		case ctx.Err() != nil:
			return nil
		case time.Now().Add(2 * time.Second).After(r.until):
			a.log.Warn("release given up; the lease ends by itself", "account", r.account, "id", r.id, "err", err)
		default:
			a.log.Warn("release failed; trying again", "account", r.account, "id", r.id, "err", err)
			a.inflight.Add(1)
			time.AfterFunc(2*time.Second, func() {
				defer a.inflight.Done()
				a.mu.Lock()
				a.rel = append(a.rel, r)
				a.mu.Unlock()
				select {
				case a.relKick <- struct{}{}:
				default:
				}
			})
		}
	}
}

// renewLoop renews every lock once per RenewEvery, each at its own time
// (their first renewals are spread over the second half of the period),
// at most 8 at once.
func (a *Agent) renewLoop(ctx context.Context) error {
	sem := make(chan struct{}, 8)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		a.mu.Lock()
		wait := time.Hour
		if len(a.due) > 0 {
			wait = time.Until(a.due[0].due)
		}
		a.mu.Unlock()
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			for range cap(sem) {
				sem <- struct{}{}
			}
			return nil
		case <-a.kick:
			continue
		case <-timer.C:
		}
		now := time.Now()
		var batch []*session
		a.mu.Lock()
		for len(a.due) > 0 && !a.due[0].due.After(now) {
			s := a.due[0]
			s.due = now.Add(a.cfg.RenewEvery)
			heap.Fix(&a.due, 0)
			batch = append(batch, s)
		}
		a.mu.Unlock()
		for _, s := range batch {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				continue
			}
			a.mu.Lock()
			e := s.entry
			a.mu.Unlock()
			go func() {
				defer func() { <-sem }()
				a.renew(ctx, s, e)
			}()
		}
	}
}

// renew renews one session's lock, acquiring it again if it was lost.
func (a *Agent) renew(ctx context.Context, s *session, e entry) {
	rctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer cancel()
	err := a.api.renew(rctx, e.Account, e.ID)
	if err == nil || ctx.Err() != nil {
		return
	}
	if !errors.Is(err, errNotHeld) {
		a.log.Warn("renew failed", "account", e.Account, "id", e.ID, "err", err)
		a.retrySoon(s)
		return
	}
	a.mu.Lock()
	live := s.fd >= 0 && s.ID == e.ID
	a.mu.Unlock()
	if !live {
		return // released meanwhile
	}
	id, err := a.api.acquire(rctx, e.Account, e.Protocol, "a session whose lease ran out")
	if err != nil {
		a.log.Warn("lock lost and not taken again", "account", e.Account, "id", e.ID, "err", err)
		a.retrySoon(s)
		return
	}
	a.log.Warn("lock lost; taken again", "account", e.Account, "old", e.ID, "id", id)
	a.mu.Lock()
	if s.fd < 0 {
		a.mu.Unlock()
		a.queueRelease(e.Account, id)
		return
	}
	s.ID = id
	_ = a.jr.remove(e.ID, a.liveLocked)
	_ = a.jr.add(s.entry)
	a.mu.Unlock()
}

// retrySoon makes a failed renewal due again in a tenth of the period.
func (a *Agent) retrySoon(s *session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s.fd < 0 {
		return
	}
	s.due = time.Now().Add(a.cfg.RenewEvery / 10)
	heap.Fix(&a.due, s.idx)
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// closeSessions closes the pidfds at exit; the locks stay, in the journal.
func (a *Agent) closeSessions() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for fd := range a.sessions {
		_ = unix.EpollCtl(a.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		unix.Close(fd)
	}
	clear(a.sessions)
	a.due = nil
}

// serve answers the login programs on the agent's socket.
func (a *Agent) serve(ctx context.Context, ln *net.UnixListener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			a.handle(ctx, c)
		}()
	}
}

// request is what the login program asks, with the pidfd of the process
// that will serve the session.
type request struct {
	Protocol string `json:"protocol"`
	User     string `json:"user"`
	IP       string `json:"ip"`
}

// reply is the agent's answer: "ok", "in_use" or "error".
type reply struct {
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
}

func (a *Agent) handle(ctx context.Context, c *net.UnixConn) {
	_ = c.SetDeadline(time.Now().Add(a.cfg.RequestTimeout + 5*time.Second))
	rep := a.answer(ctx, c)
	b, _ := json.Marshal(rep)
	_, _ = c.Write(b)
}

func (a *Agent) answer(ctx context.Context, c *net.UnixConn) reply {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return reply{Result: "error", Error: "read: " + err.Error()}
	}
	fd := -1
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, f := range fds {
				if fd < 0 {
					fd = f
				} else {
					unix.Close(f)
				}
			}
		}
	}
	if fd < 0 {
		return reply{Result: "error", Error: "no pidfd"}
	}
	keep := false
	defer func() {
		if !keep {
			unix.Close(fd)
		}
	}()
	var req request
	if err := json.Unmarshal(buf[:n], &req); err != nil {
		return reply{Result: "error", Error: "bad request: " + err.Error()}
	}
	if req.Protocol != "imap" && req.Protocol != "pop3" {
		return reply{Result: "error", Error: "protocol must be imap or pop3"}
	}
	acct := strings.ToLower(req.User)
	if acct == "" || strings.ContainsFunc(acct, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return reply{Result: "error", Error: fmt.Sprintf("account %q is not an address", req.User)}
	}
	pid, err := pidOf(fd)
	if err != nil {
		return reply{Result: "error", Error: err.Error()}
	}
	start, err := startTime(pid)
	if err != nil {
		return reply{Result: "error", Error: err.Error()}
	}
	// The start time is the process's only if it still lived after it
	// was read.
	if exited(fd) {
		return reply{Result: "error", Error: "the session's process is gone"}
	}
	rctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer cancel()
	id, err := a.api.acquire(rctx, acct, req.Protocol, req.IP)
	if errors.Is(err, errInUse) {
		a.log.Info("refused: mailbox in use", "account", acct, "protocol", req.Protocol, "ip", req.IP)
		return reply{Result: "in_use"}
	}
	if err != nil {
		a.log.Warn("no lock", "account", acct, "protocol", req.Protocol, "err", err)
		return reply{Result: "error", Error: err.Error()}
	}
	// First renewal spread over the second half of the period, so that
	// sessions that began together are not renewed together.
	first := time.Now().Add(a.cfg.RenewEvery/2 + rand.N(a.cfg.RenewEvery/2+1))
	e := entry{ID: id, Account: acct, Protocol: req.Protocol, PID: pid, Start: start}
	if err := a.add(e, fd, first); err != nil {
		a.queueRelease(acct, id)
		return reply{Result: "error", Error: err.Error()}
	}
	keep = true
	a.log.Debug("acquired", "account", acct, "protocol", req.Protocol, "pid", pid, "id", id)
	return reply{Result: "ok"}
}

// pidOf returns the pid a pidfd refers to, from /proc/self/fdinfo.
func pidOf(fd int) (int, error) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return 0, fmt.Errorf("pidfd: %w", err)
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("Pid:")); ok {
			pid, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil || pid <= 0 {
				return 0, errors.New("pidfd: the session's process is gone")
			}
			return pid, nil
		}
	}
	return 0, errors.New("pidfd: not a pidfd")
}

// startTime returns field 22 of /proc/pid/stat, the process's start time
// in clock ticks after boot.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	// The command name, in parentheses, may hold spaces: count from the
	// last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("process %d: bad stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("process %d: bad stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22 is the 20th after ')'
}

// exited reports whether the pidfd's process has exited.
func exited(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, _ := unix.Poll(p, 0)
	return n > 0
}

// dueHeap orders sessions by their next renewal.
type dueHeap []*session

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *dueHeap) Push(x any) { s := x.(*session); s.idx = len(*h); *h = append(*h, s) }
func (h *dueHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return s
}
