package fusefs

import (
	"fmt"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// mount is one mountpoint: the loopback node filesystem, wrapped to answer
// lock requests from the FS's table and to fail writes after LoseLocks.
type mount struct {
	fuse.RawFileSystem // go-fuse's loopback bridge for the backing directory
	fs                 *FS
	index              int
	dir                string
	server             *fuse.Server
	served             chan struct{} // closed when Serve returns
}

func (m *mount) String() string { return fmt.Sprintf("fusefs host%d (%s)", m.index, m.fs.mode) }

// unmount takes the mount down, lazily if it stays busy, and waits for its
// server to finish.
func (m *mount) unmount() error {
	var err error
	for delay := 5 * time.Millisecond; ; delay *= 2 {
		if err = unix.Unmount(m.dir, 0); err != unix.EBUSY {
			break
		}
		if delay > 640*time.Millisecond {
			// Still busy after about 1.3 s: detach it from the tree; the
			// kernel keeps the filesystem until its last open file goes.
			err = unix.Unmount(m.dir, unix.MNT_DETACH)
			break
		}
		time.Sleep(delay)
	}
	// EINVAL: no longer a mountpoint; someone unmounted it already, and the
	// server is on its way out.
	if err != nil && err != unix.EINVAL {
		return fmt.Errorf("fusefs: unmount %s: %w", m.dir, err)
	}
	select {
	case <-m.served:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("fusefs: %s unmounted, but its server still serves open files after 10s", m.dir)
	}
}

// ino returns the backing inode number of the file nodeID (through open
// file fh): the key of its locks, the same through every mount.
func (m *mount) ino(nodeID, fh uint64) (uint64, fuse.Status) {
	in := fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: nodeID}, Flags_: fuse.FUSE_GETATTR_FH, Fh_: fh}
	var out fuse.AttrOut
	if st := m.RawFileSystem.GetAttr(nil, &in, &out); !st.Ok() {
		return 0, st
	}
	return out.Ino, fuse.OK
}

// request turns a lock request into a lock record.
func (m *mount) request(in *fuse.LkIn) (lock, fuse.Status) {
	r := lock{
		owner: owner{m.index, in.Owner},
		flock: in.LkFlags&fuse.LK_FLOCK != 0,
		typ:   in.Lk.Typ,
		start: in.Lk.Start,
		end:   in.Lk.End,
		pid:   in.Lk.Pid,
		h:     handle{m.index, in.Fh},
	}
	switch {
	case r.typ != syscall.F_RDLCK && r.typ != syscall.F_WRLCK && r.typ != syscall.F_UNLCK:
		return r, fuse.EINVAL
	case r.start > r.end || r.end > offsetMax:
		return r, fuse.EINVAL
	case r.flock && m.fs.mode == NoFlock:
		return r, fuse.Status(m.fs.flockErrno.Load())
	}
	return r, fuse.OK
}

// GetLk answers F_GETLK and F_OFD_GETLK: the first lock that would conflict
// with the request, or F_UNLCK.
func (m *mount) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	r, st := m.request(in)
	if !st.Ok() {
		return st
	}
	ino, st := m.ino(in.NodeId, in.Fh)
	if !st.Ok() {
		return st
	}
	m.fs.mu.Lock()
	defer m.fs.mu.Unlock()
	for _, l := range m.fs.locks[ino] {
		if l.conflicts(&r) {
			out.Lk = fuse.FileLock{Start: l.start, End: l.end, Typ: l.typ, Pid: l.pid}
			return fuse.OK
		}
	}
	out.Lk = fuse.FileLock{Typ: syscall.F_UNLCK}
	return fuse.OK
}

// SetLk answers F_SETLK, F_OFD_SETLK and flock with LOCK_NB.
func (m *mount) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return m.setLk(cancel, in, false)
}

// SetLkw answers F_SETLKW, F_OFD_SETLKW and flock without LOCK_NB. It waits
// until the lock fits or the kernel interrupts the request because the
// caller got a signal; the kernel restarts the call for signals handled with
// SA_RESTART and fails it with EINTR otherwise.
func (m *mount) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return m.setLk(cancel, in, true)
}

func (m *mount) setLk(cancel <-chan struct{}, in *fuse.LkIn, wait bool) fuse.Status {
	r, st := m.request(in)
	if !st.Ok() {
		return st
	}
	ino, st := m.ino(in.NodeId, in.Fh)
	if !st.Ok() {
		return st
	}
	fs := m.fs
	for {
		fs.mu.Lock()
		if fs.trySetLocked(ino, r) {
			fs.mu.Unlock()
			return fuse.OK
		}
		wake := fs.wake
		fs.mu.Unlock()
		if !wait {
			return fuse.EAGAIN
		}
		select {
		case <-wake:
		case <-cancel:
			return fuse.EINTR
		}
	}
}

// Flush comes with every close(2) of a descriptor of the open file: close
// drops the closing process's POSIX locks on the file, whatever descriptor
// they were taken through.
func (m *mount) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	o := owner{m.index, in.LockOwner}
	fs := m.fs
	fs.mu.Lock()
	holds := false
	for _, ls := range fs.locks {
		for _, l := range ls {
			if l.owner == o && !l.flock {
				holds = true
			}
		}
	}
	fs.mu.Unlock()
	if holds {
		// Only now look up the file: most closes are of files the owner
		// holds no lock on.
		if ino, st := m.ino(in.NodeId, in.Fh); st.Ok() {
			fs.mu.Lock()
			fs.dropLocked(func(lino uint64, l *lock) bool {
				return lino == ino && l.owner == o && !l.flock
			})
			fs.mu.Unlock()
		}
	}
	return m.RawFileSystem.Flush(cancel, in)
}

// Release comes when the last descriptor of the open file is gone (and the
// process may be long reaped): its flock and OFD locks go, and whatever else
// was still taken through it.
func (m *mount) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	h := handle{m.index, in.Fh}
	flockOwner := owner{m.index, in.LockOwner}
	unlockFlock := in.ReleaseFlags&fuse.FUSE_RELEASE_FLOCK_UNLOCK != 0
	fs := m.fs
	fs.mu.Lock()
	fs.dropLocked(func(_ uint64, l *lock) bool {
		return l.h == h || (unlockFlock && l.flock && l.owner == flockOwner)
	})
	delete(fs.lost, h)
	fs.mu.Unlock()
	// Forget the handle before go-fuse may hand its number out again.
	m.RawFileSystem.Release(cancel, in)
}

// lostHandle reports whether the open file held a lock LoseLocks dropped.
func (m *mount) lostHandle(fh uint64) bool {
	m.fs.mu.Lock()
	defer m.fs.mu.Unlock()
	return m.fs.lost[handle{m.index, fh}]
}

// Write waits while the filesystem is stalled, and fails with EIO on an
// open file whose lock was lost.
func (m *mount) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if st := m.waitStall(cancel); !st.Ok() {
		return 0, st
	}
	if m.lostHandle(in.Fh) {
		return 0, fuse.EIO
	}
	return m.RawFileSystem.Write(cancel, in, data)
}

// Writev is what go-fuse calls for WRITE first; see Write.
func (m *mount) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if st := m.waitStall(cancel); !st.Ok() {
		return 0, st
	}
	if m.lostHandle(in.Fh) {
		return 0, fuse.EIO
	}
	return m.RawFileSystem.Writev(cancel, in, data)
}

// Fsync waits while the filesystem is stalled, and fails with EIO on an
// open file whose lock was lost.
func (m *mount) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if st := m.waitStall(cancel); !st.Ok() {
		return st
	}
	if m.lostHandle(in.Fh) {
		return fuse.EIO
	}
	return m.RawFileSystem.Fsync(cancel, in)
}

// Fallocate fails with EIO on an open file whose lock was lost.
func (m *mount) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if m.lostHandle(in.Fh) {
		return fuse.EIO
	}
	return m.RawFileSystem.Fallocate(cancel, in)
}

// CopyFileRange fails with EIO when it writes to an open file whose lock was
// lost.
func (m *mount) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	if m.lostHandle(in.FhOut) {
		return 0, fuse.EIO
	}
	return m.RawFileSystem.CopyFileRange(cancel, in)
}

// SetAttr fails ftruncate with EIO on an open file whose lock was lost.
func (m *mount) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.Valid&fuse.FATTR_FH != 0 && in.Valid&fuse.FATTR_SIZE != 0 && m.lostHandle(in.Fh) {
		return fuse.EIO
	}
	return m.RawFileSystem.SetAttr(cancel, in, out)
}
