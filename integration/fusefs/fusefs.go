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
