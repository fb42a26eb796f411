package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one server process of the cluster, started from a fixed command
// line so that it comes back on the same ports and data after a kill.
// Its output goes to a log file that restarts append to.
type Proc struct {
	Name    string
	Log     string // the process's log file
	argv    []string
	dir     string
	env     []string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	stopped bool // SIGSTOP'ed
}

func newProc(name, dir, log string, argv ...string) *Proc {
	return &Proc{Name: name, dir: dir, Log: log, argv: argv}
}

// Start starts the process. It is an error when it runs already.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s: already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: log: %w", p.Name, err)
	}
	fmt.Fprintf(f, "----- %s: start %v\n", time.Now().UTC().Format(time.RFC3339Nano), p.argv)
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so that a Ctrl-C at the terminal reaches
	// only the controlling program, which tears down in order; and killed
	// with us if we die, so that nothing is left running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("%s: start: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	p.cmd, p.done, p.stopped = cmd, done, false
	return nil
}

// PID is the running process's id, 0 when it is not running.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process was started and has not exited.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Exited returns a channel closed when the running process exits (nil when
// none runs).
func (p *Proc) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Kill SIGKILLs the process and waits for it to be gone.
func (p *Proc) Kill() error {
	return p.signalAndWait(syscall.SIGKILL, 0)
}

// Terminate sends SIGTERM and waits up to grace, then SIGKILLs.
func (p *Proc) Terminate(grace time.Duration) error {
	return p.signalAndWait(syscall.SIGTERM, grace)
}

func (p *Proc) signalAndWait(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	cmd, done, stopped := p.cmd, p.done, p.stopped
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if stopped && sig != syscall.SIGKILL {
		_ = cmd.Process.Signal(syscall.SIGCONT) // a stopped process handles nothing else
	}
	_ = cmd.Process.Signal(sig)
	if sig != syscall.SIGKILL {
		select {
		case <-done:
		case <-time.After(grace):
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-done
		}
	} else {
		<-done
	}
	p.mu.Lock()
	if p.cmd == cmd {
		p.cmd, p.done, p.stopped = nil, nil, false
	}
	p.mu.Unlock()
	return nil
}

// Restart kills the process when it runs, then starts it again.
func (p *Proc) Restart() error {
	if err := p.Kill(); err != nil {
		return err
	}
	return p.Start()
}

// Stop freezes the process with SIGSTOP.
func (p *Proc) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%s: not running", p.Name)
	}
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("%s: SIGSTOP: %w", p.Name, err)
	}
	p.stopped = true
	return nil
}

// Cont resumes a stopped process with SIGCONT.
func (p *Proc) Cont() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%s: not running", p.Name)
	}
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("%s: SIGCONT: %w", p.Name, err)
	}
	p.stopped = false
	return nil
}

// errTimeout marks a wait that ran out of time.
var errTimeout = errors.New("timed out")

// poll calls cond every interval until it returns true, ctx ends or
// timeout passes (errTimeout wrapping the last error cond gave).
func poll(ctx context.Context, timeout, interval time.Duration, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		// An error the poll's own deadline caused says less than the one
		// before it.
		if err != nil && (last == nil || ctx.Err() == nil) {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w after %s: %w", errTimeout, timeout, last)
			}
			return fmt.Errorf("%w after %s", errTimeout, timeout)
		case <-t.C:
		}
	}
}

// Tail is the last n lines of the process's log, for error messages.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// exitedErr says so when the process is not running.
func (p *Proc) exitedErr() error {
	if p.Running() {
		return nil
	}
	return fmt.Errorf("%s is not running; its log ends:\n%s", p.Name, p.Tail(10))
}

// waitHTTP polls url until it answers 200, failing early once exited
// reports the process gone.
func waitHTTP(ctx context.Context, timeout time.Duration, url string, exited func() error) error {
	return poll(ctx, timeout, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		if err := exited(); err != nil {
			return false, err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("%s: %s", url, resp.Status)
	})
}

// Sleep waits d, or until ctx ends (its error then). The campaign's and
// the scaling tool's schedules wait with it.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
