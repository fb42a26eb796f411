package sessionagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// scriptCommFD is the socket script-login leaves connected to the imap or
// pop3 process that will serve the session (Dovecot's src/util/script-login.c).
const scriptCommFD = 3

// Result is the agent's answer to a login.
type Result string

// The answers.
const (
	Granted Result = "ok"     // the lock is held; go on
	InUse   Result = "in_use" // refuse the session
)

// Refusal returns what a refused session of protocol is told.
func Refusal(protocol string) string {
	if protocol == "pop3" {
		return "-ERR [IN-USE] Mailbox locked\r\n"
	}
	return "* BYE [IN-USE] Mailbox locked\r\n"
}

// Login is Dovecot's post-login program: it runs with the client
// connection on stdin and stdout and the serving process on fd 3, asks the
// agent for the session's lock, and then execs next (the rest of the
// script-login chain), or refuses the session. It returns an exit status
// only when it does not exec.
func Login(cfg Config, protocol string, next []string, log *slog.Logger) int {
	if len(next) == 0 {
		log.Error("nothing to exec after the lock: run me from script-login")
		return 1
	}
	proceed := func() int {
		err := syscall.Exec(next[0], next, os.Environ())
		log.Error("exec", "path", next[0], "err", err)
		return 1
	}
	if protocol != "imap" && protocol != "pop3" {
		return proceed() // not ours to lock
	}
	user, ip := os.Getenv("USER"), os.Getenv("IP")
	log = log.With("user", user, "protocol", protocol)
	if !cfg.Keepalive.Off {
		if err := SetKeepalive(0, cfg.Keepalive); err != nil {
			log.Warn("client keepalive not set", "err", err)
		}
	}
	res, err := func() (Result, error) {
		cred, err := unix.GetsockoptUcred(scriptCommFD, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			return "", fmt.Errorf("the serving process (fd 3): %w", err)
		}
		pidfd, err := unix.PidfdOpen(int(cred.Pid), 0)
		if err != nil {
			return "", fmt.Errorf("pidfd of %d: %w", cred.Pid, err)
		}
		defer unix.Close(pidfd)
		return Ask(cfg.Socket, cfg.LoginTimeout, protocol, user, ip, pidfd)
	}()
	switch {
	case err != nil:
		if cfg.OnError == "refuse" {
			log.Error("session refused: the lock could not be asked for (on_error: refuse)", "err", err)
			return refuse(protocol)
		}
		log.Warn("session allowed without a lock (on_error: allow)", "err", err)
		return proceed()
	case res == InUse:
		return refuse(protocol)
	}
	return proceed()
}

func refuse(protocol string) int {
	_, _ = os.Stdout.WriteString(Refusal(protocol))
	return 0
}

// Ask asks the agent on socket for a lock of protocol on user's mailbox
// for the session served by the process of pidfd.
func Ask(socket string, timeout time.Duration, protocol, user, ip string, pidfd int) (Result, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("agent: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: socket}); err != nil {
		return "", fmt.Errorf("agent at %s: %w", socket, err)
	}
	msg, _ := json.Marshal(request{Protocol: protocol, User: user, IP: ip})
	if err := unix.Sendmsg(fd, msg, unix.UnixRights(pidfd), nil, 0); err != nil {
		return "", fmt.Errorf("agent: send: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return "", fmt.Errorf("agent: no answer: %w", err)
	}
	var rep reply
	if err := json.Unmarshal(buf[:n], &rep); err != nil {
		return "", fmt.Errorf("agent: bad answer %q", buf[:n])
	}
	switch Result(rep.Result) {
	case Granted, InUse:
		return Result(rep.Result), nil
	}
	if rep.Error == "" {
		rep.Error = "answer " + rep.Result
	}
	return "", errors.New("agent: " + rep.Error)
}

// SetKeepalive sets k on the socket fd when it is a TCP socket; other
// sockets are left alone.
func SetKeepalive(fd int, k Keepalive) error {
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		if errors.Is(err, unix.ENOTSOCK) {
			return nil
		}
		return err
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || (dom != unix.AF_INET && dom != unix.AF_INET6) || typ != unix.SOCK_STREAM {
		return err
	}
	ut := 0
	if k.UserTimeout != nil {
		ut = int(*k.UserTimeout / time.Millisecond)
	}
	for _, o := range []struct {
		level, opt, v int
		name          string
	}{
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(k.Idle / time.Second), "TCP_KEEPIDLE"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(k.Interval / time.Second), "TCP_KEEPINTVL"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, k.Count, "TCP_KEEPCNT"},
		{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ut, "TCP_USER_TIMEOUT"},
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, "SO_KEEPALIVE"},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			return fmt.Errorf("%s: %w", o.name, err)
		}
	}
	return nil
}
