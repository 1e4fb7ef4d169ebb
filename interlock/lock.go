package interlock

import (
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/fault"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// Lock is a held data directory. Keep it reachable for as long as the
// directory is held: it owns the locked descriptor and the attached segment.
type Lock struct {
	mu       sync.Mutex
	file     *pidfile.File
	seg      *shm.Segment
	dirID    shm.Identity // the data directory, as segment headers name it
	owners   shm.Owners   // whose segments may witness it
	hdr      shm.Header   // the header of this acquisition's segments
	rec      pidfile.Record
	prev     *Previous
	takeover *Takeover
	opts     Options
	keeper   *Keeper // the Keeper at work, if any
	released bool
}

// Record returns a copy of the holder's current record.
func (l *Lock) Record() pidfile.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rec
	r.Extra = maps.Clone(l.rec.Extra)
	return r
}

// Previous describes the record found when the lock was taken; nil only
// when Acquire created the pidfile. An existing pidfile that was empty is
// reported too (Record nil, Err saying it was empty: a start died before its
// first record), as Inspect reports it stale. Callers should log a Previous
// that is not Clean.
func (l *Lock) Previous() *Previous { return l.prev }

// File returns the locked pidfile, to pass to a child that should keep the
// lock (see pidfile.File.OS).
func (l *Lock) File() *pidfile.File { return l.file }

// Update changes the record with fn and rewrites it, fsynced only on shared
// storage (see pidfile.File.Amend). On error the record in memory is left as
// it was.
func (l *Lock) Update(fn func(*pidfile.Record)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return errors.New("update pidfile: lock already released")
	}
	r := l.rec
	r.Extra = maps.Clone(l.rec.Extra)
	fn(&r)
	return l.write(r)
}

// write amends the record to r and remembers it; l.mu must be held.
func (l *Lock) write(r pidfile.Record) error {
	if err := l.file.Amend(&r); err != nil {
		return err
	}
	l.rec = r
	return nil
}

// Check verifies that the holder still holds what it acquired, as
// PostgreSQL's RecheckDataDirLockFile does, and more: the pidfile's path still
// names the locked file (not deleted, not replaced) and no other name shares
// its inode, the kernel still lists the lock on the holder's descriptor (a
// POSIX lock vanishes when the process closes any other descriptor of the
// file), the record in it still names this acquisition, and the segment
// still exists, not marked for removal, with this acquisition's header. It
// writes nothing. A Keeper calls it every Options.Recheck.
//
// A lost pidfile, record or lock matches ErrLost (*LostError), and is
// checked first. When only the segment is gone (ipcrm, systemd-logind's
// RemoveIPC=yes) the error matches ErrSegmentLost (*SegmentLostError) and
// not ErrLost: the directory is still held, and RenewSegment gives it a new
// segment.
func (l *Lock) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	lost := func(reason string, err error) error {
		return &LostError{Dir: l.rec.DataDir, Reason: reason, Err: err}
	}
	if l.released {
		return lost("released", nil)
	}
	path := l.file.Path()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return lost("pidfile "+path+" cannot be found", err)
	}
	if dev, ino := l.file.ID(); st.Dev != dev || st.Ino != ino {
		return lost(fmt.Sprintf("pidfile %s was replaced by another file (inode %d, locked inode %d)", path, st.Ino, ino), nil)
	}
	if st.Nlink != 1 {
		return lost(fmt.Sprintf("pidfile %s now has %d links: another name shares its inode, so it is no longer provably ours "+
			"(remove the extra link: find / -xdev -inum %d)", path, st.Nlink, st.Ino), nil)
	}
	if err := l.file.CheckLock(); err != nil {
		return lost("the kernel no longer holds our lock on the pidfile", err)
	}
	rec, _, err := l.file.ReadRecord()
	switch {
	case err != nil:
		return lost("pidfile "+path+" no longer holds our record", err)
	case rec == nil:
		return lost("pidfile "+path+" was emptied", nil)
	case rec.Token != l.rec.Token || rec.PID != l.rec.PID:
		return lost(fmt.Sprintf("pidfile %s was rewritten (it names PID %d, token %s)", path, rec.PID, rec.Token), nil)
	}
	segLost := func(what string, err error) error {
		return &SegmentLostError{Dir: l.rec.DataDir, ID: l.seg.ID, What: what, Err: err}
	}
	d, err := shm.Stat(l.seg.ID)
	if err != nil {
		return segLost(SegmentRemoved, err)
	}
	if d.Removed || d.Key != l.seg.Key {
		return segLost(SegmentRemoved, nil)
	}
	if h := l.seg.Header(); h.Magic != shm.Magic || h.Dir != l.dirID || hex.EncodeToString(h.Token[:]) != l.rec.Token {
		return segLost(SegmentOverwritten, nil)
	}
	return nil
}

// RenewSegment gives a holder whose segment was lost (Check reports
// ErrSegmentLost) a new one: the old one is removed if it still exists and
// this process created it, a new one is created for the directory with this
// acquisition's header (the same token, so the DIRLOCKD_TOKEN witnesses still
// match), the old one detached, and the record rewritten with the new
// shm_key and shm_id. Check then passes again. Processes that attached to the
// old segment stay attached to it, and no longer show in the new one's
// attach count.
//
// On error the old segment stays attached, and Check keeps reporting it.
func (l *Lock) RenewSegment() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return errors.New("renew segment: lock already released")
	}
	old := l.seg
	// Its header no longer proves it ours, but the kernel's creator PID
	// does: a segment of our id and key that this very process created.
	if d, err := shm.Stat(old.ID); err == nil && !d.Removed && d.Key == old.Key && d.CreatorPID == os.Getpid() {
		if err := old.Remove(); err != nil {
			return fmt.Errorf("renew the segment of %s: %w", l.rec.DataDir, err)
		}
	}
	hdr := l.hdr
	hdr.Created = time.Now()
	seg, err := shm.Create(l.dirID, l.owners, hdr)
	if err != nil {
		return fmt.Errorf("renew the segment of %s: create shared memory segment: %w", l.rec.DataDir, err)
	}
	old.Detach()
	l.seg = seg
	r := l.rec
	r.ShmKey, r.ShmID = seg.Key, seg.ID
	if err := l.write(r); err != nil {
		return fmt.Errorf("renew the segment of %s: record new segment %d: %w", l.rec.DataDir, seg.ID, err)
	}
	return nil
}

// Release gives the directory back: the record is marked stopped, the
// segment detached and removed, and the lock released last. The pidfile
// stays. A Keeper of l is stopped first. Release is idempotent.
//
// Release only once the processes you started for the directory are gone,
// as dirlockd run does: a stopped record is taken as proof that nobody is
// left, and the next Acquire or Inspect does not search for survivors
// (unless the pidfile was rewritten after the release, or the segment
// survives).
//
// The stopped mark is fsynced only on shared storage, where another host
// reads it (pidfile.File.Amend). Locally every reader shares this kernel's
// page cache, and all a power loss can cost is the mark itself: the next
// boot then calls the release unclean, a false alarm, never a false
// reassurance. The record naming a new holder is the one Acquire syncs.
func (l *Lock) Release() error {
	l.mu.Lock()
	k := l.keeper
	l.mu.Unlock()
	if k != nil {
		k.Stop()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil
	}
	l.released = true
	r := l.rec
	r.Extra = maps.Clone(l.rec.Extra)
	r.Status = pidfile.Stopped
	if r.Extra == nil {
		r.Extra = map[string]string{}
	}
	r.Extra[stoppedAtKey] = time.Now().UTC().Format(time.RFC3339Nano)
	errMark := l.file.Amend(&r)
	if errMark == nil {
		l.rec = r
	}
	l.opts.step(fault.ReleaseMarked)
	errDetach := l.seg.Detach()
	l.opts.step(fault.ReleaseDetached)
	errRemove := l.seg.Remove()
	l.opts.step(fault.ReleaseRemoved)
	errClose := l.file.Close()
	l.opts.step(fault.ReleaseUnlocked)
	return errors.Join(errMark, errDetach, errRemove, errClose)
}
