package interlock

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

// Errors callers branch on, with errors.Is. The errors returned carry detail
// in the types below, with errors.As.
var (
	// ErrHeld: a live instance holds the data directory (*HeldError).
	ErrHeld = errors.New("data directory is held by another instance")
	// ErrOrphans: the recorded holder is gone but processes of its tree
	// survive and may still work in the directory (*OrphansError).
	ErrOrphans = errors.New("data directory is held by orphaned processes")
	// ErrInvalid: the data directory or pidfile cannot carry the interlock
	// (*pidfile.InvalidError says why and how to fix it).
	ErrInvalid = pidfile.ErrInvalid
	// ErrUnsupported: the filesystem accepts none of the lock methods
	// allowed.
	ErrUnsupported = pidfile.ErrUnsupported
	// ErrLost: a holder's Check found that its pidfile, record or kernel
	// lock no longer proves it the holder (*LostError).
	ErrLost = errors.New("data directory interlock lost")
	// ErrSegmentLost: a holder's Check found its pidfile, record and lock
	// intact but its SysV segment gone, marked for removal or overwritten
	// (*SegmentLostError). It does not match ErrLost: the directory is
	// still held; Lock.RenewSegment makes a new segment.
	ErrSegmentLost = errors.New("data directory's shared memory segment lost")
	// ErrStalled: a Keeper's storage operation has run longer than
	// KeepOptions.StallAfter (*StallError): the heartbeat is getting old,
	// and a starter on another host may take over. It does not match
	// ErrLost: the storage may still answer, and the lock prove ours.
	ErrStalled = errors.New("the data directory's storage stalled")
	// ErrLocalLocks: the filesystem is shared with other hosts, but its
	// mount options keep locks on this host (*LocalLocksError). It also
	// matches ErrInvalid.
	ErrLocalLocks = errors.New("file locks on this shared filesystem do not reach other hosts")
	// ErrLocksBroken: the lock was free, yet a holder on another host
	// proved itself alive by its heartbeat (*BrokenLocksError). It also
	// matches ErrHeld.
	ErrLocksBroken = errors.New("the storage's file locks do not keep other hosts out")
)

// LocalLocksError says why the filesystem's locks stay on this host.
type LocalLocksError struct {
	Dir        string
	Filesystem pidfile.Filesystem
	Reason     string
}

func (e *LocalLocksError) Error() string {
	return fmt.Sprintf("%s: %s (%s on %s): a second host that mounts it would not be excluded; "+
		"remount with working locks (NFS: without nolock, local_lock=none; CIFS: without nobrl), "+
		"or allow local locks (--allow-local-locks) only if no other host ever mounts it",
		e.Dir, e.Reason, e.Filesystem.Source, e.Filesystem.MountPoint)
}

func (e *LocalLocksError) Is(target error) bool {
	return target == ErrLocalLocks || target == ErrInvalid
}

// BrokenLocksError says how a holder on another host showed itself alive
// while the lock was free.
type BrokenLocksError struct {
	Dir     string
	Record  *pidfile.Record // the record as Acquire found it
	Now     *pidfile.Record // the record when it changed; nil if unreadable
	Watched time.Duration   // how long Acquire had watched
}

func (e *BrokenLocksError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: THE STORAGE'S LOCKING IS BROKEN: the pidfile lock was free, yet host %s (PID %d) is alive: ",
		e.Dir, e.Record.Hostname, e.Record.PID)
	was, _ := heartbeat(e.Record)
	switch {
	case e.Now == nil:
		fmt.Fprintf(&b, "it rewrote the record within %s", e.Watched.Round(time.Millisecond))
	case e.Now.Token != e.Record.Token:
		fmt.Fprintf(&b, "host %s (PID %d) wrote a new record within %s", e.Now.Hostname, e.Now.PID, e.Watched.Round(time.Millisecond))
	default:
		now, _ := heartbeat(e.Now)
		fmt.Fprintf(&b, "its heartbeat moved from %s to %s within %s", was.Format(time.RFC3339Nano), now.Format(time.RFC3339Nano), e.Watched.Round(time.Millisecond))
	}
	b.WriteString(". Locks taken here do not reach that host (NFS mounted nolock or local_lock=, CIFS nobrl, " +
		"a FUSE filesystem without lock support?), so the interlock cannot protect this directory. Refusing to start; " +
		"fix the mounts on every host and test the storage with dirlockd stress")
	return b.String()
}

func (e *BrokenLocksError) Is(target error) bool {
	return target == ErrLocksBroken || target == ErrHeld
}

// LostError says what Check found wrong.
type LostError struct {
	Dir    string
	Reason string
	Err    error
}

func (e *LostError) Error() string {
	s := fmt.Sprintf("%s: interlock lost: %s", e.Dir, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *LostError) Is(target error) bool { return target == ErrLost }
func (e *LostError) Unwrap() error        { return e.Err }

// StallError says how long the storage has not answered a Keeper.
type StallError struct {
	Dir   string
	Limit time.Duration // KeepOptions.StallAfter, or its default
}

func (e *StallError) Error() string {
	return fmt.Sprintf("%s: the storage has not answered for %v: another host may take over", e.Dir, e.Limit)
}

func (e *StallError) Is(target error) bool { return target == ErrStalled }

// What happened to a holder's segment, for SegmentLostError.
const (
	SegmentRemoved     = "was removed"     // gone, or marked for removal (IPC_RMID)
	SegmentOverwritten = "was overwritten" // its header no longer names this acquisition
)

// SegmentLostError says what happened to the holder's segment.
type SegmentLostError struct {
	Dir  string
	ID   int    // the lost segment's id
	What string // SegmentRemoved or SegmentOverwritten
	Err  error
}

func (e *SegmentLostError) Error() string {
	s := fmt.Sprintf("%s: shared memory segment %d %s while the lock is still held: ", e.Dir, e.ID, e.What)
	if e.What == SegmentOverwritten {
		s += "a process attached to it wrote over its header (a server writing to a segment id that is not its own?)"
	} else {
		s += "systemd-logind RemoveIPC=yes (set RemoveIPC=no in /etc/systemd/logind.conf, or run the server as a system user) or ipcrm"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *SegmentLostError) Is(target error) bool { return target == ErrSegmentLost }
func (e *SegmentLostError) Unwrap() error        { return e.Err }

// HeldError says who holds the data directory.
type HeldError struct {
	Dir string
	// PID, Host and Started come from the holder's record. PID is in the
	// holder's own PID namespace.
	PID     int
	Host    string
	Started time.Time
	Status  pidfile.Status
	// Holders are the processes holding the lock as the kernel sees them
	// from here (the holder and any children sharing its descriptor).
	// Empty when the holder is out of sight: another host, or a PID
	// namespace we cannot see into.
	Holders []int
	// Record is the holder's record; nil if it could not be read (a
	// holder that is still starting, or one that is out of sight and
	// wrote garbage).
	Record *pidfile.Record
}

func (e *HeldError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is in use", e.Dir)
	switch {
	case e.Record == nil && len(e.Holders) > 0:
		fmt.Fprintf(&b, ": the pidfile lock is held by PID %s, which has not written its record yet (starting?)", joinPIDs(e.Holders))
	case e.Record == nil:
		b.WriteString(": the pidfile lock is held by a process not visible from here (another host or PID namespace), and its record is unreadable")
	default:
		fmt.Fprintf(&b, ": held by PID %d on host %s since %s (status %s)", e.PID, e.Host,
			e.Started.Local().Format(time.RFC3339), e.Status)
		if len(e.Holders) == 0 {
			b.WriteString("; that process is not visible from here (another host or PID namespace)")
		}
	}
	if slices.Contains(e.Holders, os.Getpid()) {
		b.WriteString("; that is this very process, which already holds it through another interlock.Lock")
	}
	return b.String()
}

func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Witness names the evidence that a process survives from an earlier holder.
type Witness string

// The witnesses.
const (
	// WitnessLock: it holds the pidfile lock through a descriptor it
	// inherited.
	WitnessLock Witness = "holds the pidfile lock"
	// WitnessSegment: it is attached to the directory's SysV segment.
	WitnessSegment Witness = "is attached to the data directory's shared memory segment"
	// WitnessToken: its environment carries the previous holder's
	// DIRLOCKD_TOKEN.
	WitnessToken Witness = "carries the previous holder's DIRLOCKD_TOKEN"
	// WitnessStarted: its environment says dirlockd run started it for
	// this data directory (DIRLOCKD_PIDFILE names its pidfile), whatever
	// the pidfile says now.
	WitnessStarted Witness = "was started by dirlockd run for this data directory (DIRLOCKD_PIDFILE)"
)

// Orphan is one surviving process.
type Orphan struct {
	PID     int // 0 when only an attach count shows it (not visible here)
	Cmdline string
	Witness Witness
}

// OrphansError lists the survivors of an earlier holder.
type OrphansError struct {
	Dir      string
	Previous *pidfile.Record // the recorded holder, if the record is readable
	Orphans  []Orphan
}

// PIDs returns the survivors' PIDs (without the invisible ones).
func (e *OrphansError) PIDs() []int {
	var out []int
	for _, o := range e.Orphans {
		if o.PID > 0 && !slices.Contains(out, o.PID) {
			out = append(out, o.PID)
		}
	}
	return out
}

func (e *OrphansError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is still in use by processes of a previous holder", e.Dir)
	if e.Previous != nil {
		fmt.Fprintf(&b, " (PID %d, started %s)", e.Previous.PID, e.Previous.StartTime.Local().Format(time.RFC3339))
	}
	b.WriteString(":")
	for i, o := range e.Orphans {
		if i > 0 {
			b.WriteString(";")
		}
		if o.PID > 0 {
			fmt.Fprintf(&b, " PID %d (%s) %s", o.PID, o.Cmdline, o.Witness)
		} else {
			fmt.Fprintf(&b, " a process not visible from here %s", o.Witness)
		}
	}
	if pids := e.PIDs(); len(pids) > 0 {
		fmt.Fprintf(&b, "; stop them (kill %s) and start again", joinPIDs(pids))
	} else {
		b.WriteString("; stop the old server's processes and start again")
	}
	return b.String()
}

func (e *OrphansError) Is(target error) bool { return target == ErrOrphans }

func orphansOf(pids []int, w Witness) []Orphan {
	out := make([]Orphan, 0, len(pids))
	for _, p := range pids {
		out = append(out, Orphan{PID: p, Cmdline: proc.Cmdline(p), Witness: w})
	}
	return out
}

func joinPIDs(pids []int) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, " ")
}
