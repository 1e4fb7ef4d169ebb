package interlock

import (
	"time"

	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// stoppedAtKey is the record key in which Release writes when it marked the
// record stopped (RFC 3339 with nanoseconds, by the holder's clock).
const stoppedAtKey = "stopped_at"

// The window around stopped_at in which the pidfile's ctime must fall for
// the record to be the one Release left: the kernel's coarse clock may lag
// the holder's by a tick, and a loaded machine may stall between the clock
// read and the write.
const (
	stoppedBefore = time.Second
	stoppedAfter  = 10 * time.Second
)

// cleanStop reports whether rec proves that its holder's whole process tree
// is gone, so that no survivor can be left to search for.
//
// Only Release writes status=stopped, and dirlockd run releases only after
// the server's whole process tree is gone (issue 9: "a cleanly stopped
// record proves the tree is gone"); a library user must likewise release
// only once its children are gone. The one way a stopped record can lie is
// by not being the last thing written to this pidfile: a pidfile restored
// from a backup or copied in place, whose stopped record describes an
// earlier holder while a later one's server lives on with its descriptors
// closed. That rewrite moves the pidfile's ctime, which the kernel sets and
// nobody can set back, away from the record's stopped_at. A record without
// stopped_at (an older dirlockd) or whose ctime does not match pays for the
// search, as does any record not stopped, and a missing or unreadable one.
//
// One more fact costs a single syscall and keeps the segment witness whole
// whatever the writer of the record promised: Release removes the segment
// the record names, and the kernel keeps a removed segment until its last
// process detaches, so a segment of this boot that still exists means
// somebody is (or was just) attached, and the search runs.
func cleanStop(rec *pidfile.Record, changed time.Time, me self) bool {
	if rec == nil || rec.Status != pidfile.Stopped || changed.IsZero() {
		return false
	}
	if me.sameBoot(rec) && rec.ShmID >= 0 {
		if _, err := shm.Stat(rec.ShmID); err == nil {
			return false
		}
	}
	at, err := time.Parse(time.RFC3339Nano, rec.Extra[stoppedAtKey])
	if err != nil {
		return false
	}
	return !changed.Before(at.Add(-stoppedBefore)) && !changed.After(at.Add(stoppedAfter))
}
