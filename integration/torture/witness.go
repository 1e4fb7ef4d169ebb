// Package torture is dirlockd's reliability harness: it starts holders,
// contenders and victims as real processes, injects faults, and checks the
// invariants dirlockd promises: never two holders, never stuck after a crash,
// nothing leaked, nothing of a holder destroyed by a failed starter.
//
// Mutual exclusion is checked by witnesses that do not trust dirlockd: every
// holder appends enter and exit events to a log opened O_APPEND (the kernel
// serialises the appends, so the file order is the order they happened in),
// and increments a counter file with a deliberate read-sleep-write that loses
// increments whenever two holders overlap. The scenarios live in this package
// so that the CI test run (minutes) and a soak run (hours) share them.
package torture

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Witness is a pair of files, outside the data directory, that holders report
// to.
type Witness struct {
	Dir string
}

func (w Witness) logPath() string     { return filepath.Join(w.Dir, "witness.log") }
func (w Witness) counterPath() string { return filepath.Join(w.Dir, "counter") }

// NewWitness makes an empty witness in dir.
func NewWitness(dir string) (Witness, error) {
	w := Witness{Dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return w, err
	}
	if err := os.WriteFile(w.counterPath(), []byte("0\n"), 0o600); err != nil {
		return w, err
	}
	return w, os.WriteFile(w.logPath(), nil, 0o600)
}

// now is CLOCK_MONOTONIC, comparable across the processes of one boot.
func now() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// event appends one line; a single write to an O_APPEND file is atomic with
// respect to other appends.
func (w Witness) event(kind, token string) error {
	f, err := os.OpenFile(w.logPath(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%s %d %s %d\n", kind, os.Getpid(), token, now())
	return err
}

// Work is what a holder does while it holds: announce itself, increment the
// counter slowly (read, sleep hold, write), announce its exit.
func (w Witness) Work(token string, hold time.Duration) error {
	if err := w.event("enter", token); err != nil {
		return err
	}
	return w.finishWork(token, hold)
}

// finishWork is the second half of Work: increment the counter (read, sleep
// hold, write) and announce the exit, also for holders that entered earlier.
func (w Witness) finishWork(token string, hold time.Duration) error {
	b, err := os.ReadFile(w.counterPath())
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("counter: %w", err)
	}
	time.Sleep(hold)
	if err := os.WriteFile(w.counterPath(), []byte(strconv.Itoa(n+1)+"\n"), 0o600); err != nil {
		return err
	}
	return w.event("exit", token)
}

// Killed records that the holder with token was killed, and that it was dead
// (no longer able to touch anything) at the time of the call.
func (w Witness) Killed(token string) error { return w.event("killed", token) }

// Verdict is what Verify found.
type Verdict struct {
	Entries    int      // holders that entered
	Completed  int      // holders that exited normally
	Killed     int      // holders that were killed inside
	Counter    int      // final counter value
	Violations []string // overlaps and lost increments
}

// Verify replays the log. Between an enter and its exit (or its killed) no
// other enter may appear; the counter must equal the completed holders, give
// or take those killed in the middle of their read-sleep-write.
func (w Witness) Verify() (Verdict, error) {
	var v Verdict
	f, err := os.Open(w.logPath())
	if err != nil {
		return v, err
	}
	defer f.Close()
	inside := "" // token of the current holder
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		fs := strings.Fields(sc.Text())
		if len(fs) != 4 {
			v.Violations = append(v.Violations, fmt.Sprintf("line %d: malformed %q", line, sc.Text()))
			continue
		}
		kind, tok := fs[0], fs[2]
		switch kind {
		case "enter":
			v.Entries++
			if inside != "" {
				v.Violations = append(v.Violations, fmt.Sprintf("line %d: %s entered while %s was inside (two holders)", line, tok, inside))
			}
			inside = tok
		case "exit", "killed":
			if inside != tok {
				if kind == "killed" && inside == "" {
					continue // killed before it entered
				}
				v.Violations = append(v.Violations, fmt.Sprintf("line %d: %s %s while %q was inside", line, tok, kind, inside))
				continue
			}
			inside = ""
			if kind == "exit" {
				v.Completed++
			} else {
				v.Killed++
			}
		}
	}
	if err := sc.Err(); err != nil {
		return v, err
	}
	b, err := os.ReadFile(w.counterPath())
	if err != nil {
		return v, err
	}
	if v.Counter, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		v.Violations = append(v.Violations, fmt.Sprintf("counter unreadable: %q", b))
	}
	if v.Counter < v.Completed || v.Counter > v.Completed+v.Killed {
		v.Violations = append(v.Violations, fmt.Sprintf("counter %d, but %d holders completed and %d were killed inside: lost or extra increments",
			v.Counter, v.Completed, v.Killed))
	}
	return v, nil
}
