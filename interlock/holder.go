package interlock

import (
	"fmt"

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

// recordedHolder reports whether the process rec names, seen from our own
// PID namespace, is alive with the recorded start time and holds the lock
// (holds answers that, cheaply: from its own descriptors).
func recordedHolder(rec *pidfile.Record, me self, holds func(pid int) bool) bool {
	return rec != nil && me.sameBoot(rec) && rec.PIDNS == me.pidNS && holds(rec.PID) && proc.Alive(rec.PID, rec.PIDStart)
}
