package interlock

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

// judgeBusy says who holds a busy lock. final is false when the answer may be
// transient: a starter that has the lock but has not written its record yet
// looks like an orphan, and an inspector's probe like an invisible holder.
//
// holds answers whether a given process holds the lock, cheaply; holders
// lists every holder, at the cost of a scan of all processes, needed only
// when the recorded holder turns out not to be one.
func judgeBusy(dir string, rec *pidfile.Record, holds func(pid int) bool,
	holders func() ([]int, error), me self) (verdict error, final bool) {
	held := &HeldError{Dir: dir, Record: rec}
	if rec != nil {
		held.PID, held.Host, held.Started, held.Status = rec.PID, rec.Hostname, rec.StartTime, rec.Status
		if recordedHolder(rec, me, holds) {
			held.Holders = []int{rec.PID}
			return held, true
		}
	}
	hs, err := holders()
	if err != nil {
		return fmt.Errorf("find the holders of %s: %w", dir, err), true
	}
	held.Holders = hs
	if len(hs) == 0 {
		// Out of sight. Trust a record that plausibly names a holder we
		// cannot see; anything else may be a passing probe.
		remote := rec != nil && (!me.sameBoot(rec) || rec.PIDNS != me.pidNS)
		return held, remote && rec.Status != pidfile.Stopped
	}
	if me.sameBoot(rec) && rec.PIDNS != me.pidNS {
		for _, h := range hs {
			// A holder in a PID namespace below ours shows another PID
			// here; its start time is the same in every namespace.
			if proc.Alive(h, rec.PIDStart) {
				return held, true
			}
		}
	}
	if rec == nil {
		return held, false
	}
	return &OrphansError{Dir: dir, Previous: rec, Orphans: orphansOf(hs, WitnessLock)}, false
}

// recordedHolder reports whether the process rec names proves itself the
// holder (see proveHolder); holds answers whether a process holds the lock,
// cheaply: from its own descriptors.
func recordedHolder(rec *pidfile.Record, me self, holds func(pid int) bool) bool {
	return proveHolder(rec, me, holds) == nil
}

// proveHolder is the one rule for who counts as the holder a record names:
// a process seen from our own boot and PID namespace (its PID means
// something here), alive with the recorded start time (not a reused PID),
// that holds the lock itself. It says which part failed.
func proveHolder(rec *pidfile.Record, me self, holds func(pid int) bool) error {
	switch {
	case rec == nil:
		return errors.New("the holder has not written a readable record (still starting?)")
	case !me.sameBoot(rec) || rec.PIDNS != me.pidNS:
		return fmt.Errorf("PID %d was recorded on host %s in another boot or PID namespace: it cannot be proven from here", rec.PID, rec.Hostname)
	}
	return proveProcess(rec.PID, rec.PIDStart, holds)
}

// proveProcess says whether pid, seen from here, is alive with start time
// start (0: any) and holds the lock.
func proveProcess(pid int, start uint64, holds func(pid int) bool) error {
	if !holds(pid) {
		return fmt.Errorf("PID %d does not hold the pidfile lock", pid)
	}
	if !proc.Alive(pid, start) {
		return fmt.Errorf("PID %d is not the recorded holder any more: it exited, or its PID was reused (start time is not the recorded %d)", pid, start)
	}
	return nil
}

// A PinnedHolder is a process proven to hold a directory's lock, pinned by a
// pidfd: a signal sent through it reaches that process or, once it is gone,
// nobody, even if its PID is reused meanwhile.
type PinnedHolder struct {
	PID int
	p   proc.Pinned
}

func pinnedHolder(p proc.Pinned) *PinnedHolder { return &PinnedHolder{PID: p.PID, p: p} }

// Signal sends sig to the pinned process.
func (h *PinnedHolder) Signal(sig syscall.Signal) error { return h.p.Signal(sig) }

// Close releases the pidfd.
func (h *PinnedHolder) Close() error { return h.p.Close() }

// PinHolder pins the process a Held report's record names and proves, with
// facts read after the pidfd pins it, that it is the holder (the rule of
// Inspect: same boot and PID namespace, the recorded start time, holds the
// lock of the pidfile Inspect looked at). The caller closes the holder. It
// fails, saying why, for a holder that cannot be proven from here: on another
// host or in another PID namespace, not yet recorded, gone or replaced.
func (r *Report) PinHolder() (*PinnedHolder, error) {
	if r.State != Held {
		return nil, fmt.Errorf("%s is %s: there is no holder to pin", r.Dir, r.State)
	}
	me, err := whoami()
	if err != nil {
		return nil, err
	}
	if err := proveHolder(r.Record, me, func(int) bool { return true }); err != nil {
		return nil, err
	}
	return r.pin(r.Record.PID, r.Record.PIDStart)
}

// PinInstance pins those of pids (processes that hold the lock now, listed
// after r was made, so perhaps already of a next instance) that are proven to
// belong to the instance r's record names: its recorded PID with the recorded
// start time, or a process carrying its token; each still holds the lock. It
// returns the others, which hold the lock but are not proven of that
// instance; the processes it could not pin (gone) are in neither.
func (r *Report) PinInstance(pids []int) (pinned []*PinnedHolder, others []int) {
	rec := r.Record
	if rec == nil {
		return nil, pids
	}
	fds := pinAll(pids)
	// Read the environments after the pidfds pin the processes.
	var ours map[int]string
	if rec.Token != "" {
		ours, _ = proc.WithEnv(TokenEnv + "=" + rec.Token)
	}
	for _, pid := range pids {
		p, ok := fds[pid]
		if !ok {
			continue
		}
		var start uint64 // any: the token proves it ours
		if pid == rec.PID {
			start = rec.PIDStart
		} else if _, ok := ours[pid]; !ok {
			p.Close()
			others = append(others, pid)
			continue
		}
		if h, err := r.proveOpened(p, start); err == nil {
			pinned = append(pinned, h)
		} else {
			p.Close()
		}
	}
	return pinned, others
}

// pin opens a pidfd on pid and proves the process it pins.
func (r *Report) pin(pid int, start uint64) (*PinnedHolder, error) {
	p, err := proc.Open(pid)
	if err != nil {
		return nil, err
	}
	h, err := r.proveOpened(p, start)
	if err != nil {
		p.Close()
	}
	return h, err
}

// pinAll pins each of pids that it can, by PID.
func pinAll(pids []int) map[int]proc.Pinned {
	ps := make(map[int]proc.Pinned, len(pids))
	for _, pid := range pids {
		if p, err := proc.Open(pid); err == nil {
			ps[pid] = p
		}
	}
	return ps
}

// proveOpened proves the process p pins (proveProcess), then checks
// that the pidfd still refers to a live process: a signal 0 through it fails
// with ESRCH once the process is gone. The process alive at the end was the
// same one throughout (a live process's PID cannot be reused), so the facts
// read in between were its own.
func (r *Report) proveOpened(p proc.Pinned, start uint64) (*PinnedHolder, error) {
	pid := p.PID
	if err := proveProcess(pid, start, func(pid int) bool { return proc.HoldsLock(pid, r.PidfileDev, r.PidfileIno) }); err != nil {
		return nil, err
	}
	if err := unix.PidfdSendSignal(p.FD(), 0, nil, 0); err != nil {
		return nil, fmt.Errorf("PID %d: %w", pid, err)
	}
	return pinnedHolder(p), nil
}
