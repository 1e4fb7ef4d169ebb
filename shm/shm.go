// Package shm keeps the System V shared-memory witness of a data directory.
//
// A holder creates one small segment whose header names the data directory
// (by st_dev and st_ino), the holder, and the acquisition. The kernel counts
// the processes attached to it (shm_nattch): a crashed holder's children that
// were forked without exec stay attached, so a segment of ours with a non-zero
// attach count proves that part of an old process tree is still alive, even
// when the pidfile has been deleted or rewritten. This is PostgreSQL's
// interlock; dirlockd keeps it beside the file lock.
//
// Processes that exec lose their attachment, and segments are invisible
// across IPC namespaces: the segment is one witness of several, never the
// only one.
//
// Segments are found through the kernel's list of the IPC namespace's
// segments (/proc/sysvipc/shm), so a new holder finds the old segment
// without the pidfile, at any key. Only a segment that root, the
// directory's owner or the holder's uid created and owns (Owners) may be a
// witness: anybody can make a segment at any key and copy a header into
// it. Keys are derived from the directory's identity only so that ipcs
// shows one stable key per directory; they differ from PostgreSQL's (which
// start at st_ino) so that wrapping a PostgreSQL server does not shift its
// keys, and a window full of others' segments makes Create use
// IPC_PRIVATE. Nothing is ever removed unless its maker is trusted, its
// header proves it ours and nobody is attached.
package shm

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/users"
)

// Size is the size of a segment: one page, of which the header uses a
// hundred bytes.
const Size = 4096

// shmDest is SHM_DEST, the mode bit of a segment marked for removal; x/sys
// has no constant for it.
const shmDest = 0o1000

// Segment is an attached segment of ours.
type Segment struct {
	ID  int
	Key int
	mem []byte // the mapping; kept here so it stays reachable while attached
}

// Header returns the segment's header as it is now in memory.
func (s *Segment) Header() Header { return decodeHeader(s.mem) }

// Detach unmaps the segment.
func (s *Segment) Detach() error {
	if s.mem == nil {
		return nil
	}
	err := unix.SysvShmDetach(s.mem)
	s.mem = nil
	if err != nil {
		return fmt.Errorf("shmdt segment %d: %w", s.ID, err)
	}
	return nil
}

// Remove marks the segment for removal; the kernel frees it at the last
// detach. A segment already gone is not an error.
func (s *Segment) Remove() error {
	if _, err := unix.SysvShmCtl(s.ID, unix.IPC_RMID, nil); err != nil && !gone(err) {
		return fmt.Errorf("remove segment %d (key 0x%08x): %w", s.ID, uint32(s.Key), err)
	}
	return nil
}

// Status is the kernel's view of a segment (shmctl IPC_STAT).
type Status struct {
	ID         int
	Key        int
	Nattch     int // processes attached
	CreatorPID int // the process that created it
	// Removed says the segment was removed (IPC_RMID, as ipcrm does)
	// while still attached: it lives on, private, until the last detach,
	// and its key no longer finds it.
	Removed bool
}

// Stat returns the kernel's view of segment id. A segment that is gone
// fails with an error matching unix.EINVAL or unix.EIDRM.
func Stat(id int) (Status, error) {
	d, err := stat(id)
	if err != nil {
		return Status{}, err
	}
	return Status{ID: id, Key: int(d.Perm.Key), Nattch: int(d.Nattch), CreatorPID: int(d.Cpid), Removed: markedForRemoval(d)}, nil
}

func stat(id int) (*unix.SysvShmDesc, error) {
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &d); err != nil {
		return nil, fmt.Errorf("shmctl(%d, IPC_STAT): %w", id, err)
	}
	return &d, nil
}

func markedForRemoval(d *unix.SysvShmDesc) bool { return d.Perm.Mode&shmDest != 0 }

func gone(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) || errors.Is(err, unix.ENOENT)
}

// ErrAttached is wrapped by errors that say a segment of the data directory
// still has processes attached.
var ErrAttached = errors.New("segment still attached")

// AttachedError names a segment of the data directory that still has
// processes attached: survivors of an earlier holder.
type AttachedError struct {
	Analysis
}

func (e *AttachedError) Error() string {
	return fmt.Sprintf("segment %d (key 0x%08x) of this data directory has %d process(es) attached: %v",
		e.ID, uint32(e.Key), e.Nattch, e.PIDs)
}

func (e *AttachedError) Is(target error) bool { return target == ErrAttached }

// ErrLimit is wrapped by the error of a Create that the system's limits on
// SysV segments refused.
var ErrLimit = errors.New("system limit on SysV shared memory reached")

// LimitError says that the kernel refused a new segment because a
// system-wide limit is reached: kernel.shmmni (the number of segments) or
// kernel.shmall (their total size). It names the sysctl and its value, so
// that nobody mistakes it for a full filesystem (both are ENOSPC), and the
// users whose segments there are, most first: another user may have made
// them all.
type LimitError struct {
	Segments int   // segments listed in our IPC namespace
	Shmmni   int64 // kernel.shmmni, -1 if unreadable
	// Owners counts the segments by owner uid.
	Owners map[uint32]int
}

func (e *LimitError) Error() string {
	var by []string
	for _, uid := range slices.SortedFunc(maps.Keys(e.Owners), func(a, b uint32) int {
		return cmp.Or(cmp.Compare(e.Owners[b], e.Owners[a]), cmp.Compare(a, b))
	}) {
		if len(by) == 3 {
			by = append(by, "...")
			break
		}
		by = append(by, fmt.Sprintf("%d of %s", e.Owners[uid], users.Name(uid)))
	}
	owners := ""
	if len(by) > 0 {
		owners = " (" + strings.Join(by, ", ") + ")"
	}
	return fmt.Sprintf("the kernel refused a new SysV shared memory segment (ENOSPC): %d segments exist%s and sysctl kernel.shmmni is %d (or kernel.shmall, their total size, is reached); "+
		"remove unused segments (ipcs -m; ipcrm -m ID) or raise the limit (sysctl -w kernel.shmmni=N)", e.Segments, owners, e.Shmmni)
}

func (e *LimitError) Is(target error) bool { return target == ErrLimit }

func limitError() error {
	e := &LimitError{Shmmni: -1, Owners: map[uint32]int{}}
	if b, err := os.ReadFile("/proc/sys/kernel/shmmni"); err == nil {
		e.Shmmni, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	if segs, err := list(); err == nil {
		e.Segments = len(segs)
		for _, l := range segs {
			e.Owners[l.uid]++
		}
	}
	return e
}

// Create makes a new segment for dir, attached, with header h (whose Magic,
// Version and Dir it fills in). It probes keys from BaseKey upward: a
// segment made by others than owners, or one that is not dir's, makes it
// move on; an unattached segment of ours, left by a holder that crashed, is
// removed and its key reused; an attached one of ours stops it with an
// *AttachedError. When every key of the window is taken by others (another
// user may fill it on purpose: the keys are no secret), it creates the
// segment with IPC_PRIVATE: the key only makes the segment easy to find
// with ipcs; Scan finds it without one.
func Create(dir Identity, owners Owners, h Header) (*Segment, error) {
	h.Magic, h.Version, h.Dir = Magic, LayoutVersion, dir
	key := BaseKey(dir)
	for tries, same := 0, 0; tries < ProbeLimit; {
		seg, err := createAt(key, h)
		if err != unix.EEXIST {
			return seg, err
		}
		a, err := analyzeKey(key, dir, owners, true)
		if err != nil {
			return nil, err
		}
		switch a.State {
		case Gone, Unattached:
			// Freed under us, or ours and just removed: the key is free.
			if same++; same > 100 {
				return nil, fmt.Errorf("shmget(0x%08x): key keeps being taken", uint32(key))
			}
			continue
		case Foreign:
			key, tries, same = nextKey(key), tries+1, 0
		case Attached:
			return nil, &AttachedError{a}
		}
	}
	return createAt(unix.IPC_PRIVATE, h)
}

// createAt makes and attaches a segment at key and writes h into it. It
// returns unix.EEXIST itself when the key is taken.
func createAt(key int, h Header) (*Segment, error) {
	id, err := unix.SysvShmGet(key, Size, unix.IPC_CREAT|unix.IPC_EXCL|0o600)
	switch {
	case err == unix.EEXIST:
		return nil, err
	case err == unix.ENOSPC:
		return nil, limitError()
	case err != nil:
		return nil, fmt.Errorf("shmget(0x%08x, IPC_CREAT|IPC_EXCL): %w", uint32(key), err)
	}
	mem, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		unix.SysvShmCtl(id, unix.IPC_RMID, nil)
		return nil, fmt.Errorf("shmat(%d) of new segment: %w", id, err)
	}
	h.encode(mem)
	return &Segment{ID: id, Key: key, mem: mem}, nil
}
