// Package fusefs is a FUSE filesystem for dirlockd's tests: one backing
// directory served as several mounts ("hosts"), with a lock table that
// behaves like NFS's (shared), like an NFS mount with nolock (local only),
// like a FUSE filesystem without flock support, and that can lose its locks
// on command, as an NFSv4 server does after a lease expires.
//
// There is no NFS client on the test machines, but FUSE is there, and a FUSE
// filesystem can take over file locking from the kernel. Every mount of an
// FS is its own superblock, so the kernel treats the mounts as unrelated
// filesystems, the way two NFS clients are unrelated machines: a process that
// locks through mount A and one that locks through mount B meet only in the
// lock table this package keeps, as two clients meet only at the NFS server.
//
// Data goes through to the backing directory. Names and attributes are not
// cached (timeouts 0), and a mount drops its cached pages on open and when a
// read finds the size or mtime changed, so what one mount writes the other
// reads at once, even through a descriptor open all along. Writes are
// write-through (no writeback cache, and no passthrough, which would take
// reads and writes around the server): every write(2) reaches the server,
// which is what lets LoseLocks fail it. One thing stays cached: the kernel
// places an O_APPEND write at the file size its own mount last saw, and
// refreshes that only on stat, open or read; a long-lived O_APPEND
// descriptor therefore overwrites what another mount appended meanwhile,
// unless it fstats first. NFS clients have the same hazard.
//
// Locks follow local Linux semantics within each family: flock locks and
// POSIX/OFD locks never conflict with each other (an NFS client would turn
// flock into a whole-file POSIX lock, so there they would), POSIX and OFD
// locks conflict unless the owner is the same, ranges split and merge as
// fcntl(2) says. There is no deadlock detection (no EDEADLK), as on NFS.
//
// What the kernel asks of a FUSE lock server, and what this package does:
//
//   - Lock requests carry an owner: for POSIX (fcntl F_SETLK) locks the
//     process's file table, for OFD locks and flock the open file. This
//     package scopes owners to the mount they came through, as an NFS server
//     scopes them to the client.
//   - With remote locks the kernel keeps no record of its own and so never
//     sends an unlock when a file is closed or its holder dies. It sends
//     FLUSH on every close(2), carrying the closing process's lock owner, and
//     RELEASE when the last reference to the open file goes. POSIX locks of
//     that owner on that file are dropped on FLUSH (close drops a process's
//     POSIX locks, whichever descriptor it closes); every lock taken through
//     the open file (flock, OFD) is dropped on RELEASE.
//   - RELEASE is asynchronous: close(2) returns, and the process may even be
//     reaped, before the server sees it. flock and OFD locks are therefore
//     freed shortly after their last close, not at it; POSIX locks are freed
//     during close(2) itself.
//   - A blocked SETLKW must give up when the kernel interrupts it (the
//     waiting process got a signal): a SIGKILLed waiter otherwise stays in
//     uninterruptible sleep until the lock comes free.
//
// Set FUSEFS_DEBUG=1 in the environment to have go-fuse log every request
// and reply on stderr.
package fusefs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Mode selects how the mounts of an FS treat file locks.
type Mode int

const (
	// Shared keeps flock and POSIX/OFD locks in one central table, seen by
	// every mount (as NLM or NFSv4 locking).
	Shared Mode = iota
	// LocalOnly has no lock operations: the kernel keeps locks per mount,
	// so the mounts do not exclude each other (as NFS mounted "nolock" or
	// local_lock=all), while processes on one mount still do.
	LocalOnly
	// NoFlock keeps POSIX/OFD locks in the central table and refuses flock
	// requests, by default with DefaultFlockErrno (see SetFlockErrno).
	NoFlock
)

// DefaultFlockErrno is what flock(2) fails with on a NoFlock mount unless
// SetFlockErrno says otherwise: ENOSYS, the reply of a FUSE server without a
// flock operation. The kernel hands the server's errno to flock(2) unchanged
// (verified on Linux 6.18 for ENOSYS, EOPNOTSUPP and ENOLCK), for LOCK_NB
// and blocking calls alike, and unlike an ENOSYS reply to FLUSH or FSYNC it
// does not remember it: every flock call reaches the server and fails again.
const DefaultFlockErrno = syscall.ENOSYS

// String returns the mode's name as tests print it.
func (m Mode) String() string {
	switch m {
	case Shared:
		return "shared"
	case LocalOnly:
		return "local-only"
	case NoFlock:
		return "no-flock"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

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

// FS is a running filesystem: one backing directory served at one or more
// mountpoints by this process.
type FS struct {
	backing string
	mode    Mode
	mounts  []*mount

	mu sync.Mutex
	// locks holds the lock table by backing inode. The inode number
	// identifies the file across mounts, and cannot be reused while a lock
	// on it stands, since every lock is dropped by the RELEASE of its open
	// file at the latest and the open file keeps the backing inode alive.
	locks map[uint64][]lock
	// wake is closed, and replaced, whenever locks are dropped, to let
	// SETLKW waiters look again.
	wake chan struct{}
	// lost holds the open files that held a lock LoseLocks dropped: their
	// writes fail with EIO until they are released.
	lost map[handle]bool
	// stalled, while not nil, holds writes and fsyncs until it is closed
	// (Stall).
	stalled chan struct{}
	waiting atomic.Int32 // writes and fsyncs held by a stall

	flockErrno atomic.Uintptr // syscall.Errno for flock on NoFlock mounts

	closeOnce sync.Once
	closeErr  error
}

// Mount serves backing at each mountpoint (existing empty directories) from
// this process, in the given mode. Mounting needs root (it calls mount(2)
// itself, no fusermount). Close unmounts.
func Mount(backing string, mode Mode, mountpoints ...string) (*FS, error) {
	if mode < Shared || mode > NoFlock {
		return nil, fmt.Errorf("fusefs: unknown mode %d", int(mode))
	}
	if len(mountpoints) == 0 {
		return nil, errors.New("fusefs: no mountpoint")
	}
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("fusefs: %w", err)
	}
	if fi, err := os.Stat(backing); err != nil {
		return nil, fmt.Errorf("fusefs: backing directory: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("fusefs: backing %s is not a directory", backing)
	}
	fs := &FS{
		backing: backing,
		mode:    mode,
		locks:   make(map[uint64][]lock),
		wake:    make(chan struct{}),
		lost:    make(map[handle]bool),
	}
	fs.flockErrno.Store(uintptr(DefaultFlockErrno))
	for i, mp := range mountpoints {
		if abs, err := filepath.Abs(mp); err == nil && strings.HasPrefix(abs+"/", backing+"/") {
			// The server would serve its own requests: a deadlock.
			return nil, errors.Join(fmt.Errorf("fusefs: mountpoint %s inside backing %s", mp, backing), fs.Close())
		}
		m, err := fs.mount(i, mp)
		if err != nil {
			err = fmt.Errorf("fusefs: mount %s at %s (%s): %w", backing, mp, mode, err)
			return nil, errors.Join(err, fs.Close())
		}
		fs.mounts = append(fs.mounts, m)
	}
	return fs, nil
}

func (fs *FS) mount(index int, mountpoint string) (*mount, error) {
	mountpoint, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	root, err := gofs.NewLoopbackRoot(fs.backing)
	if err != nil {
		return nil, err
	}
	// No caching of names, attributes or failed lookups: each mount must
	// see what the other wrote at once. (Page-cache data is dropped on
	// open, and on read when the kernel sees mtime or size change, since
	// go-fuse asks for auto_inval_data.)
	var zero time.Duration
	inner := gofs.NewNodeFS(root, &gofs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
	})
	m := &mount{RawFileSystem: inner, fs: fs, index: index, dir: mountpoint, served: make(chan struct{})}
	srv, err := fuse.NewServer(m, mountpoint, &fuse.MountOptions{
		DirectMountStrict: true, // root calls mount(2) itself; never fusermount
		AllowOther:        true, // helpers running as other users may look in
		EnableLocks:       fs.mode != LocalOnly,
		// Passthrough would send reads and writes from the kernel straight
		// to the backing file, around Write and Fsync, which must be able
		// to fail after LoseLocks.
		DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		// Shown as the source in /proc/mounts, as an NFS export would be.
		FsName: fmt.Sprintf("host%d:%s", index, fs.backing),
		Name:   "dirlockdtest",
		// Every request and reply on stderr, for debugging a test.
		Debug: os.Getenv("FUSEFS_DEBUG") != "",
	})
	if err != nil {
		return nil, err
	}
	m.server = srv
	go func() {
		srv.Serve()
		close(m.served)
	}()
	if err := srv.WaitMount(); err != nil {
		// The kernel has the mount; take it down again.
		return nil, errors.Join(err, m.unmount())
	}
	return m, nil
}

// Mode returns the mode the filesystem was mounted in.
func (fs *FS) Mode() Mode { return fs.mode }

// Backing returns the backing directory.
func (fs *FS) Backing() string { return fs.backing }

// Mountpoints returns the mountpoints, in the order Mount was given them.
func (fs *FS) Mountpoints() []string {
	dirs := make([]string, len(fs.mounts))
	for i, m := range fs.mounts {
		dirs[i] = m.dir
	}
	return dirs
}

// SetFlockErrno sets the errno with which NoFlock mounts refuse flock from
// now on, for tests of how a caller handles each (ENOSYS, EOPNOTSUPP, ENOLCK,
// EINVAL...). It has no effect in the other modes.
func (fs *FS) SetFlockErrno(errno syscall.Errno) { fs.flockErrno.Store(uintptr(errno)) }

// LoseLocks empties the lock table, as a server that lost its lease; every
// open file that held a dropped lock fails write and fsync with EIO from
// then on (as the Linux NFSv4 client does after a lost lock) until it is
// closed. Returns how many locks were dropped.
func (fs *FS) LoseLocks() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := 0
	for _, ls := range fs.locks {
		for _, l := range ls {
			fs.lost[l.h] = true
			n++
		}
	}
	clear(fs.locks)
	fs.wakeLocked()
	return n
}

// Stall makes every write and fsync, through every mount, wait until resume
// is called (or Close), as on a hard NFS mount whose server does not answer:
// the caller blocks in the system call, and only SIGKILL gets it out. Reads,
// lookups and lock operations go on.
func (fs *FS) Stall() (resume func()) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.stalled == nil {
		fs.stalled = make(chan struct{})
	}
	return fs.resume
}

// Stalled says how many writes and fsyncs are waiting on a stall now.
func (fs *FS) Stalled() int { return int(fs.waiting.Load()) }

func (fs *FS) resume() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.stalled != nil {
		close(fs.stalled)
		fs.stalled = nil
	}
}

// waitStall holds a write or fsync while the filesystem is stalled. The
// kernel interrupts the request only for a fatal signal.
func (m *mount) waitStall(cancel <-chan struct{}) fuse.Status {
	m.fs.mu.Lock()
	ch := m.fs.stalled
	m.fs.mu.Unlock()
	if ch == nil {
		return fuse.OK
	}
	m.fs.waiting.Add(1)
	defer m.fs.waiting.Add(-1)
	select {
	case <-ch:
		return fuse.OK
	case <-cancel:
		return fuse.EINTR
	}
}

// Locks returns how many lock records the table holds now. A lock that was
// split by unlocking its middle counts twice.
func (fs *FS) Locks() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := 0
	for _, ls := range fs.locks {
		n += len(ls)
	}
	return n
}

// Close unmounts every mountpoint (lazily, if one stays busy) and waits for
// the servers. After a lazy unmount the server goes on serving the files
// still open there; Close gives up waiting for it after a while and says so.
func (fs *FS) Close() error {
	fs.closeOnce.Do(func() {
		fs.resume()
		var errs []error
		for _, m := range fs.mounts {
			errs = append(errs, m.unmount())
		}
		fs.closeErr = errors.Join(errs...)
	})
	return fs.closeErr
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
