// Package stress tells an operator whether a storage keeps dirlockd's
// interlock: whether two processes, on one host or on several clients of a
// shared filesystem, can ever hold the same data directory at once.
//
// Workers loop on the real interlock.Acquire and Release, through the
// guards dirlockd run holds a directory with (supervise.LocalGuard, and
// lease.Guard for --etcd: guards.go); Command is the stress command. While
// they hold the directory they report to two witness files that live in the data directory
// itself, so that every client of the storage writes to the same ones:
//
//   - the log (LogName): every hold appends an enter event and an exit event,
//     one JSON line each, opened O_APPEND and synced. Appends happen under
//     the lock, so when the lock works the file order is the global order of
//     holds on every host, and a line torn or lost by two concurrent appends
//     is itself evidence that it did not.
//   - the counter (CounterName): every hold reads it, sleeps, and writes it
//     back plus one. Two holders at once lose an increment, which the next
//     enter, and the final value, reveal.
//
// Check replays the combined log of every host that ran against the
// directory, with the counter, and lists the violations. Nothing in the
// check trusts dirlockd: it only trusts the kernel's O_APPEND on one host
// and the ordering of appends made under a lock that works.
package stress

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

// The witness files, in the data directory next to the pidfile. They are
// created when missing and never truncated: several hosts start at once, and
// none may wipe what another already wrote. An operator deletes both to start
// afresh. They are opened as the pidfile is (pidfile.OpenInDir): a symbolic
// link, a hard link to a file elsewhere or a file of another owner in their
// place is refused, never written through.
const (
	LogName     = "dirlockd-stress.log"
	CounterName = "dirlockd-stress.counter"
)

// The event kinds.
const (
	EvEnter  = "enter"  // a worker took the directory; Counter is the value it read
	EvExit   = "exit"   // a worker is about to release it; Counter is the value it wrote
	EvKilled = "killed" // the stress parent SIGKILLed worker Victim inside a hold and saw it die
	EvStop   = "stop"   // a stress run's workers are all gone, and its kills logged
)

// Event is one line of the log.
type Event struct {
	Ev string `json:"ev"`
	// W names the writer: a random id per worker process, and per stress
	// parent for killed events. PIDs are reused and repeat across hosts
	// and containers; writer ids do not.
	W string `json:"w"`
	// Run names the stress run: its parent's writer id.
	Run string `json:"run"`
	// Seq counts the writer's events from 1: a gap is a lost line.
	Seq   int64  `json:"seq"`
	Host  string `json:"host"`
	Boot  string `json:"boot"`
	TimeN uint64 `json:"timens,omitempty"` // time namespace: Mono values compare only within one boot and time namespace
	PID   int    `json:"pid"`
	// Token is the record token of the hold (for killed: of the hold
	// the victim was in).
	Token string `json:"token"`
	// Fence is the hold's fencing token when a lease guards the holds
	// too (stress --etcd): it must grow from each enter to the next.
	Fence int64 `json:"fence,omitempty"`
	// Counter: read (enter) or written (exit); -1 when the counter file
	// held something else than a number (Err says what).
	Counter int64  `json:"counter"`
	Err     string `json:"err,omitempty"`
	// WaitNS is how long Acquire took (enter).
	WaitNS int64 `json:"wait_ns,omitempty"`
	// Killed events: the victim's writer id and PID, and when SIGKILL
	// was sent; Mono is when its death was confirmed.
	Victim     string `json:"victim,omitempty"`
	VictimPID  int    `json:"victim_pid,omitempty"`
	SignalMono int64  `json:"signal_mono,omitempty"`
	Wall       string `json:"wall"`
	Mono       int64  `json:"mono"` // CLOCK_MONOTONIC, ns
}

// monoNow reads CLOCK_MONOTONIC, which processes of one boot (and one time
// namespace) share.
func monoNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// writer appends one writer's events to the log of a data directory.
type writer struct {
	path  string
	id    string
	run   string
	host  string
	boot  string
	timeN uint64
	seq   int64
	sync  bool // fsync each line: the log is on shared storage (see durable)
	// f is the log, kept open between appends on local storage, where
	// O_APPEND writes at the inode's true end and a reopen checks nothing
	// new; on shared storage every append opens it afresh (see Append).
	f *os.File
}

// durable reports whether writes to the witness files in dir must be synced
// before they count: on shared storage, where the checker may read them from
// another host. On a local filesystem every reader shares this kernel's page
// cache, and what a crash of the kernel loses it loses for every worker at
// once, with the run.
func durable(dir string) bool {
	fs, err := pidfile.StatFS(dir)
	return err != nil || fs.Shared()
}

// newWriter prepares a writer with id (see newID), of the stress run run,
// for the log in dir; host is the label its events carry.
func newWriter(dir, id, run, host string) (*writer, error) {
	boot, err := proc.BootID()
	if err != nil {
		return nil, err
	}
	// Without time namespaces (kernels before 5.6) every process of the
	// boot shares one monotonic clock: 0 stands for that.
	tns, _ := proc.Namespace(os.Getpid(), "time")
	return &writer{path: filepath.Join(dir, LogName), id: id, run: run, host: host, boot: boot, timeN: tns, sync: durable(dir)}, nil
}

// ID returns the writer's id.
func (w *writer) ID() string { return w.id }

// newID returns a fresh writer id.
func newID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make writer id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Append fills in the writer's fields of e (id, run, seq, host, boot, pid,
// and the times unless set) and appends it as one line. The file is opened
// afresh and fstat'ed first on shared storage:
// on NFS and FUSE, opening revalidates the cached size that O_APPEND writes
// at (close-to-open consistency), which a descriptor kept open would not.
// The line goes in one write, synced before Append returns on shared
// storage.
func (w *writer) Append(e Event) error {
	w.seq++
	e.W, e.Run, e.Seq, e.Host, e.Boot, e.TimeN, e.PID = w.id, w.run, w.seq, w.host, w.boot, w.timeN, os.Getpid()
	if e.Mono == 0 { // a killed event carries the time of the death
		e.Wall, e.Mono = time.Now().UTC().Format(time.RFC3339Nano), monoNow()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("append to %s: %w", w.path, err)
	}
	f := w.f
	if f == nil {
		if f, err = pidfile.OpenInDir(filepath.Dir(w.path), LogName, os.O_WRONLY|os.O_APPEND|os.O_CREATE); err != nil {
			return err
		}
		if _, err := f.Stat(); err != nil {
			f.Close()
			return err
		}
	}
	n, err := f.Write(append(b, '\n'))
	if err == nil && n != len(b)+1 {
		err = fmt.Errorf("append to %s: short write (%d of %d bytes)", w.path, n, len(b)+1)
	}
	if err == nil && w.sync {
		err = f.Sync()
	}
	if err == nil && !w.sync {
		w.f = f
		return nil
	}
	w.f = nil
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close closes the log if Append kept it open.
func (w *writer) Close() error {
	if w.f == nil {
		return nil
	}
	f := w.f
	w.f = nil
	return f.Close()
}

// counterWidth is the size of the counter file: 20 digits and a newline, so
// that a write never changes its size and two writes can only overwrite each
// other, never leave a mix of lengths.
const counterWidth = 21

// errCounter marks a counter file that holds something else than a number.
var errCounter = errors.New("counter file is corrupt")

// readCounter reads the counter from an open counter file. An empty file (just
// created) counts as 0.
func readCounter(f *os.File) (int64, error) {
	b := make([]byte, 64)
	n, err := f.ReadAt(b, 0)
	if err != nil && n == 0 && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return parseCounter(b[:n], f.Name())
}

func parseCounter(b []byte, path string) (int64, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if len(b) != counterWidth || b[counterWidth-1] != '\n' {
		return 0, fmt.Errorf("%w: %s holds %q, want 20 digits and a newline", errCounter, path, b)
	}
	v, err := strconv.ParseInt(string(b[:counterWidth-1]), 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%w: %s holds %q, want 20 digits and a newline", errCounter, path, b)
	}
	return v, nil
}

// writeCounter writes v at offset 0, and syncs it when sync is set.
func writeCounter(f *os.File, v int64, sync bool) error {
	if _, err := f.WriteAt(fmt.Appendf(nil, "%020d\n", v), 0); err != nil {
		return err
	}
	if !sync {
		return nil
	}
	return f.Sync()
}

// openCounter opens (creating if needed) the counter file of dir.
func openCounter(dir string) (*os.File, error) {
	return pidfile.OpenInDir(dir, CounterName, os.O_RDWR|os.O_CREATE)
}

// prepare creates the witness files of dir if they are missing, without
// touching their content, so that a stress run fails early on a directory
// it cannot write.
func prepare(dir string) error {
	for _, name := range []string{LogName, CounterName} {
		f, err := pidfile.OpenInDir(dir, name, os.O_WRONLY|os.O_CREATE)
		if err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}
