package interlock

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

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
	// Holders are the processes holding the pidfile lock, as far as the
	// kernel shows them here.
	Holders []int
	// Segments are the data directory's SysV segments found.
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
// not even a POSIX lock is disturbed (see pidfile.Read).
func Inspect(dir string, opts Options) (*Report, error) {
	me, err := whoami()
	if err != nil {
		return nil, err
	}
	abs, err := pidfile.CheckDir(dir)
	if err != nil {
		return nil, err
	}
	dirID, err := shm.DirIdentity(abs)
	if err != nil {
		return nil, err
	}
	fs, err := pidfile.StatFS(abs)
	if err != nil {
		return nil, err
	}
	if why := fs.LocalOnly(opts.LockMethod); why != "" && !opts.AllowLocalLocks {
		return nil, &LocalLocksError{Dir: abs, Filesystem: fs, Reason: why}
	}
	deadline := time.Now().Add(opts.settleTime())
	for {
		r, err := pidfile.Read(abs, opts.pidfileOptions())
		if err != nil {
			return nil, err
		}
		rep := &Report{Dir: abs, Pidfile: r.Path, Record: r.Record, RecordErr: r.Err, Holders: r.Holders, Filesystem: fs}
		if r.Outcome == pidfile.Held {
			v, final := judgeBusy(abs, r.Record, func(pid int) bool { return slices.Contains(r.Holders, pid) },
				func() ([]int, error) { return r.Holders, nil }, me)
			if !final && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			rep.Err = v
			switch {
			case errors.Is(v, ErrHeld):
				rep.State = Held
			case errors.Is(v, ErrOrphans):
				rep.State = Orphaned
			default:
				return nil, v
			}
			return rep, nil
		}
		rep.Segments, err = witness(abs, r.Path, dirID, r.Record, me, false)
		switch {
		case errors.As(err, new(*OrphansError)):
			rep.State, rep.Err = Orphaned, err
		case err != nil:
			return nil, err
		case r.Outcome == pidfile.NotExist, r.Record != nil && r.Record.Status == pidfile.Stopped:
			rep.State = Free
		case len(r.Raw) == 0:
			// An empty pidfile: a start died before its first record.
			rep.State, rep.RecordErr = Stale, fmt.Errorf("%s: %w", r.Path, errEmpty)
		default:
			rep.State = Stale
			if fs.Shared() {
				rep.TakeoverWatch = opts.takeoverWatch(r.Record, me, time.Now())
			}
		}
		return rep, nil
	}
}

// Message explains the report in one sentence, as a boot script should log
// it.
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
	if _, err := os.Stat(r.Pidfile); err != nil {
		return fmt.Sprintf("%s is free (no pidfile yet)", r.Dir)
	}
	return fmt.Sprintf("%s is free", r.Dir)
}
