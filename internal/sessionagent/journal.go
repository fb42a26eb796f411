package sessionagent

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// entry is one lock the agent holds, as its journal keeps it: enough to
// find the session's process again after a restart (pid and start time)
// and to release the lock (account and id).
type entry struct {
	ID       string
	Account  string
	Protocol string
	PID      int
	Start    uint64 // the process's start time, /proc/PID/stat field 22
}

// journal is the agent's state file: one line per lock taken ("+ id pid
// start protocol account") and one per lock given up ("- id"). It is
// appended to as locks come and go, and rewritten with the live locks
// alone at start and whenever the dead lines outnumber the live ones by
// more than compactSlack. Writes go to the page cache without fsync: the
// journal must survive a crash of the agent, which it does; after a crash
// of the host it may miss the last seconds of changes, whose leases then
// expire by themselves.
type journal struct {
	path string
	f    *os.File
	w    *bufio.Writer
	live int
	dead int
}

const compactSlack = 1024

// readJournal returns the locks the journal at path holds; none when it
// does not exist.
func readJournal(path string) (map[string]entry, error) {
	out := map[string]entry{}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) == 2 && fields[0] == "-":
			delete(out, fields[1])
		case len(fields) == 6 && fields[0] == "+":
			pid, err1 := strconv.Atoi(fields[2])
			start, err2 := strconv.ParseUint(fields[3], 10, 64)
			if err1 != nil || err2 != nil {
				continue // a torn line of a crash
			}
			out[fields[1]] = entry{ID: fields[1], PID: pid, Start: start, Protocol: fields[4], Account: fields[5]}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	return out, nil
}

// openJournal rewrites the journal at path with live and opens it for
// appending.
func openJournal(path string, live []entry) (*journal, error) {
	j := &journal{path: path}
	if err := j.rewrite(live); err != nil {
		return nil, err
	}
	return j, nil
}

func (j *journal) rewrite(live []entry) error {
	if err := os.MkdirAll(filepath.Dir(j.path), 0o700); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	tmp := j.path + ".new"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	w := bufio.NewWriter(f)
	for _, e := range live {
		writeAdd(w, e)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Rename(tmp, j.path); err != nil {
		f.Close()
		return fmt.Errorf("state: %w", err)
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.w, j.live, j.dead = f, bufio.NewWriterSize(f, 512), len(live), 0
	return nil
}

func writeAdd(w *bufio.Writer, e entry) {
	fmt.Fprintf(w, "+ %s %d %d %s %s\n", e.ID, e.PID, e.Start, e.Protocol, e.Account)
}

// add records a lock taken.
func (j *journal) add(e entry) error {
	writeAdd(j.w, e)
	j.live++
	return j.w.Flush()
}

// remove records a lock given up; all is the agent's live locks, for a
// compaction.
func (j *journal) remove(id string, all func() []entry) error {
	fmt.Fprintf(j.w, "- %s\n", id)
	j.live--
	j.dead += 2
	if err := j.w.Flush(); err != nil {
		return err
	}
	if j.dead > j.live+compactSlack {
		return j.rewrite(all())
	}
	return nil
}

func (j *journal) close() error {
	if j.f == nil {
		return nil
	}
	err := j.w.Flush()
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	j.f = nil
	return err
}
