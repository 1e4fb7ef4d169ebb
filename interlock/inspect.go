package interlock

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// State is what Inspect found.
type State string

// The states.
const (
	Free     State = "free"    // no pidfile, or the last holder shut down cleanly
	Stale    State = "stale"   // lock free, nobody left, but no clean release: the holder died, or the pidfile is empty or malformed
	Held     State = "held"    // a live instance holds it
	Orphaned State = "orphans" // a dead holder's processes survive
)

// Report is the result of Inspect.
type Report struct {
	Dir     string
	Pidfile string
	State   State
	// Record is the pidfile's record, if readable; RecordErr says why not
	// when the pidfile has content that is not a record.
	Record    *pidfile.Record
	RecordErr error
	// PidfileDev and PidfileIno identify the pidfile whose lock Inspect
	// tested (zero when there is none): the lock that PinHolder proves a
	// holder holds.
	PidfileDev, PidfileIno uint64
	// DirOwner is the uid owning the data directory. HolderUID is the uid
	// the pidfile's holders run as (its owner: a holder writes only a
	// pidfile of its own), nil when there is no pidfile. Who may signal a
	// holder is root or this uid (see MaySignal).
	DirOwner  uint32
	HolderUID *uint32
	// Holders are the processes holding the pidfile lock, as far as the
	// kernel shows them here: only the recorded holder when it proves
	// itself, unless Options.ListHolders.
	Holders []int
	// Segments are the data directory's SysV segments found by the
	// survivor search; none are looked for after a clean stop.
	Segments []shm.Analysis
	// Err is the *HeldError or *OrphansError that Acquire would return
	// now, for Held and Orphaned.
	Err error
	// Filesystem is the filesystem under the data directory.
	Filesystem pidfile.Filesystem
	// TakeoverWatch is, for Stale on shared storage, how long a start
	// would watch the previous holder's heartbeat before taking over (it
	// is on another host, and beat recently); zero otherwise.
	TakeoverWatch time.Duration
}

// Inspect reports the state of dir without taking it. It never holds the
// lock for longer than a probe of a free lock takes, and Acquire tolerates
// such probes, so it is safe to call while an instance starts. A directory
// this process holds is reported Held by this process, with the record read
// through the holder's own descriptor: the pidfile is not opened again, so
// not even a POSIX lock is disturbed (see pidfile.Look).
func Inspect(dir string, opts Options) (*Report, error) {
	in := InspectAll([]string{dir}, opts)[0]
	return in.Report, in.Err
}

// Inspection is InspectAll's answer for one directory: a Report, or why
// there is none.
type Inspection struct {
	Report *Report
	Err    error
}

// InspectAll is Inspect of several directories at once, answered in the
// order of dirs. What costs a look at every process (the survivor search of
// directories whose record is not a clean stop, the holders of a lock whose
// recorded holder does not prove itself) is done in one pass over /proc for
// all of them.
//
// Each directory costs only what its state demands: a held directory whose
// recorded holder proves itself (same boot and PID namespace, same start
// time, and its own fdinfo shows the lock) names that holder alone, unless
// opts.ListHolders asks for every process sharing the lock; a free one
// whose record is a clean stop (see cleanStop) needs no survivor search; a
// crashed, missing or unreadable record pays for the search.
func InspectAll(dirs []string, opts Options) []Inspection {
	out := make([]Inspection, len(dirs))
	me, err := whoami()
	if err != nil {
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	var pending []*inspecting
	for i, dir := range dirs {
		in, err := prepare(dir, opts)
		if err != nil {
			out[i].Err = err
			continue
		}
		in.i = i
		pending = append(pending, in)
	}
	deadline := time.Now().Add(opts.settleTime())
	// Each retry scans /proc: a pause of 20 ms on average keeps that cheap.
	pause := backoff{d: 20 * time.Millisecond, max: 20 * time.Millisecond}
	for len(pending) > 0 {
		var q proc.Query
		ready := pending[:0]
		for _, in := range pending {
			if err := in.look(opts, me, &q); err != nil {
				out[in.i].Err = err
				continue
			}
			ready = append(ready, in)
		}
		found, err := proc.Search(q)
		if err != nil {
			for _, in := range ready {
				out[in.i].Err = err
			}
			return out
		}
		var again []*inspecting
		for _, in := range ready {
			rep, final, err := in.judge(found, opts, me)
			if !final && time.Now().Before(deadline) {
				again = append(again, in)
				continue
			}
			out[in.i] = Inspection{Report: rep, Err: err}
		}
		if pending = again; len(pending) > 0 {
			// A busy lock nobody proves to hold: a starter that has
			// not written its record yet, or a passing probe.
			time.Sleep(pause.next())
		}
	}
	return out
}

// inspecting is one directory of InspectAll.
type inspecting struct {
	i      int
	abs    string
	dirID  shm.Identity
	fs     pidfile.Filesystem
	r      *pidfile.Reading
	proven bool // the recorded holder proved itself
	clean  bool // the lock is free and the record a clean stop
}

func prepare(dir string, opts Options) (*inspecting, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, &pidfile.InvalidError{Path: dir, Problem: "cannot resolve path", Err: err}
	}
	return &inspecting{abs: abs}, nil
}

// look reads the pidfile and tests its lock, and adds to q what the pass
// over /proc must find for this directory.
func (in *inspecting) look(opts Options, me self, q *proc.Query) error {
	// Look opens the directory once and tells everything from that
	// descriptor: the directory's identity, its filesystem, the pidfile.
	r, err := pidfile.Look(in.abs, opts.pidfileOptions())
	if err != nil {
		return err
	}
	if why := r.Filesystem.LocalOnly(opts.LockMethod); why != "" && !opts.AllowLocalLocks {
		return &LocalLocksError{Dir: in.abs, Filesystem: r.Filesystem, Reason: why}
	}
	in.r, in.fs, in.dirID = r, r.Filesystem, shm.Identity{Dev: r.DirDev, Ino: r.DirIno}
	switch {
	case r.Outcome == pidfile.Held:
		in.proven = recordedHolder(r.Record, me, func(pid int) bool { return proc.HoldsLock(pid, r.Dev, r.Ino) })
		if !in.proven || opts.ListHolders {
			q.Locked = append(q.Locked, proc.FileID{Dev: r.Dev, Ino: r.Ino})
		}
	case r.Outcome == pidfile.NotHeld && cleanStop(r.Record, r.Changed, me):
		in.clean = true
	default:
		q.Env = append(q.Env, survivorEntries(r.Path, r.Record, me)...)
	}
	return nil
}

// judge turns what look and the pass found into a report. final is false
// while a busy lock may still be a starter or a probe.
func (in *inspecting) judge(found *proc.Found, opts Options, me self) (rep *Report, final bool, err error) {
	r := in.r
	rep = &Report{Dir: in.abs, Pidfile: r.Path, PidfileDev: r.Dev, PidfileIno: r.Ino,
		Record: r.Record, RecordErr: r.Err, Filesystem: in.fs, DirOwner: r.DirOwner}
	if r.Outcome != pidfile.NotExist {
		rep.HolderUID = &r.Owner
	}
	if r.Outcome == pidfile.Held {
		rep.Holders = found.Holders[proc.FileID{Dev: r.Dev, Ino: r.Ino}]
		if in.proven && !opts.ListHolders {
			rep.Holders = []int{r.Record.PID}
		}
		v, final := judgeBusy(in.abs, r.Record, func(pid int) bool { return slices.Contains(rep.Holders, pid) },
			func() ([]int, error) { return rep.Holders, nil }, me)
		rep.Err = v
		switch {
		case errors.Is(v, ErrHeld):
			rep.State = Held
		case errors.Is(v, ErrOrphans):
			rep.State = Orphaned
		default:
			return nil, true, v
		}
		return rep, final, nil
	}
	if in.clean {
		rep.State = Free
		return rep, true, nil
	}
	rep.Segments, err = witness(newPlace(in.abs, r.Path, in.dirID, r.DirOwner, r.Owner), r.Record, me, false, found)
	switch {
	case errors.As(err, new(*OrphansError)):
		rep.State, rep.Err = Orphaned, err
	case err != nil:
		return nil, true, err
	case r.Outcome == pidfile.NotExist, r.Record != nil && r.Record.Status == pidfile.Stopped:
		rep.State = Free
	case len(r.Raw) == 0:
		// An empty pidfile: a start died before its first record.
		rep.State, rep.RecordErr = Stale, fmt.Errorf("%s: %w", r.Path, errEmpty)
	default:
		rep.State = Stale
		rep.TakeoverWatch = opts.takeoverWatch(in.fs, r.Record, me, time.Now())
	}
	return rep, true, nil
}

// MaySignal reports whether uid may signal the holder or survivors of the
// directory (dirlockd stop): root, or the uid the holder runs as. The
// directory's owner alone is not enough when a holder runs as another user
// (root holding a directory it owns for a server that drops privileges is
// stopped by root).
func (r *Report) MaySignal(uid uint32) bool {
	return uid == 0 || r.HolderUID != nil && *r.HolderUID == uid
}

// Message explains the report in one sentence, as a boot script should log
// it. It reads nothing: it tells what Inspect found, not what is there now.
func (r *Report) Message() string {
	switch r.State {
	case Held, Orphaned:
		return r.Err.Error()
	case Stale:
		p := &Previous{Record: r.Record, Raw: nil, Err: r.RecordErr}
		if r.TakeoverWatch > 0 {
			at, _ := heartbeat(r.Record)
			return fmt.Sprintf("%s is free: %s; it ran on host %s and beat %s ago, so a start will first watch its heartbeat for %s",
				r.Dir, p, r.Record.Hostname, time.Since(at).Round(time.Second), r.TakeoverWatch)
		}
		return fmt.Sprintf("%s is free: %s", r.Dir, p)
	}
	if r.Record == nil { // free without a record: Inspect found no pidfile
		return fmt.Sprintf("%s is free (no pidfile yet)", r.Dir)
	}
	return fmt.Sprintf("%s is free", r.Dir)
}
