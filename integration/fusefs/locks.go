package fusefs

// The lock table every mount of an FS answers from, as an NFS server's is
// for its clients: fcntl semantics (ranges, owners, replace and split).

import (
	"syscall"
)

// offsetMax is the end of a lock that runs to the end of the file, as the
// kernel sends it (OFFSET_MAX); ends are inclusive.
const offsetMax = 1<<63 - 1

// handle names an open file: the FUSE file handle is only unique within its
// mount.
type handle struct {
	mount int
	fh    uint64
}

// owner is a lock owner; the kernel's owner ids are only unique within one
// connection, i.e. one mount, as NFS lock owners are within one client.
type owner struct {
	mount int
	id    uint64
}

// lock is one lock record. Ranges are inclusive; a flock is the whole file.
type lock struct {
	owner owner
	flock bool   // flock family; the other family is POSIX and OFD locks
	typ   uint32 // syscall.F_RDLCK or syscall.F_WRLCK
	start uint64
	end   uint64
	pid   uint32 // of the process that took it, for F_GETLK
	h     handle // the open file it was taken through
}

func (l *lock) overlaps(o *lock) bool { return l.start <= o.end && o.start <= l.end }

// conflicts reports whether l and o cannot both be held. flock and
// POSIX/OFD locks are independent families (as on a local Linux
// filesystem; an NFS client would map flock onto POSIX locks, so there they
// conflict), and an owner never conflicts with itself.
func (l *lock) conflicts(o *lock) bool {
	return l.flock == o.flock && l.owner != o.owner && l.overlaps(o) &&
		(l.typ == syscall.F_WRLCK || o.typ == syscall.F_WRLCK)
}

// wakeLocked wakes every SETLKW waiter. fs.mu must be held.
func (fs *FS) wakeLocked() {
	close(fs.wake)
	fs.wake = make(chan struct{})
}

// trySetLocked applies r (F_RDLCK, F_WRLCK or F_UNLCK) for r.owner on file
// ino, as fcntl(F_SETLK) does: a new lock replaces what the owner held in
// its range, an unlock trims or splits the owner's locks. It reports false,
// changing nothing, if another owner's lock is in the way. fs.mu must be
// held.
func (fs *FS) trySetLocked(ino uint64, r lock) bool {
	ls := fs.locks[ino]
	if r.typ != syscall.F_UNLCK {
		for i := range ls {
			if ls[i].conflicts(&r) {
				return false
			}
		}
	}
	changed := false
	var out []lock
	for _, l := range ls {
		if l.owner != r.owner || l.flock != r.flock || !l.overlaps(&r) {
			out = append(out, l)
			continue
		}
		changed = true
		if l.start < r.start {
			left := l
			left.end = r.start - 1
			out = append(out, left)
		}
		if l.end > r.end {
			right := l
			right.start = r.end + 1
			out = append(out, right)
		}
	}
	if r.typ != syscall.F_UNLCK {
		// Coalesce with the owner's adjacent locks of the same type taken
		// through the same open file, as the kernel coalesces POSIX locks,
		// so F_GETLK reports whole ranges.
		for i := 0; i < len(out); {
			l := out[i]
			if l.owner == r.owner && l.flock == r.flock && l.typ == r.typ && l.h == r.h &&
				l.start <= r.end+1 && r.start <= l.end+1 {
				r.start, r.end = min(r.start, l.start), max(r.end, l.end)
				out = append(out[:i], out[i+1:]...)
				continue
			}
			i++
		}
		out = append(out, r)
	}
	fs.storeLocked(ino, out)
	if changed {
		// A lock went or shrank, or was downgraded: waiters may now fit.
		fs.wakeLocked()
	}
	return true
}

// dropLocked removes the locks for which drop, given the lock and the
// backing inode of its file, returns true. fs.mu must be held.
func (fs *FS) dropLocked(drop func(ino uint64, l *lock) bool) {
	dropped := false
	for ino, ls := range fs.locks {
		out := ls[:0]
		for _, l := range ls {
			if drop(ino, &l) {
				dropped = true
				continue
			}
			out = append(out, l)
		}
		fs.storeLocked(ino, out)
	}
	if dropped {
		fs.wakeLocked()
	}
}

// storeLocked sets the locks of ino, forgetting the inode when there are
// none. fs.mu must be held.
func (fs *FS) storeLocked(ino uint64, ls []lock) {
	if len(ls) == 0 {
		delete(fs.locks, ino)
	} else {
		fs.locks[ino] = ls
	}
}
