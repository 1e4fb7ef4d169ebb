package pidfile

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ReleaseWatch tells a waiter the moment the pidfile's lock may have been
// released, so that it can try again at once instead of polling.
//
// A flock or OFD lock is released when the last descriptor of its open file
// description is closed (a holder's Release, its exit, a crash), and a
// POSIX lock when its holder closes any descriptor of the file. The kernel
// reports each such close of a writable description on the inode with
// inotify's IN_CLOSE_WRITE (at the final fput, the very moment a flock or
// OFD lock goes), so a waiter sleeps in the kernel until then. The watch
// only wakes the waiter; the lock is only ever taken by the waiter's own
// TryLock, so a cancelled wait leaves nothing held. Where the kernel can
// queue the waiter itself (flock and OFD locks on a local filesystem),
// LockWait is better: the lock goes to a waiter at the release, where a
// woken watcher races the releaser's next attempt. The watch serves POSIX
// locks and shared storage.
//
// Wakeups may be spurious (an inspector closing its own read-write
// descriptor) and may be missed (an explicit unlock without a close, or a
// holder on another host of a shared filesystem, which inotify does not
// see), so waiters still try again after a fallback interval.
type ReleaseWatch struct {
	f   *os.File
	buf [4096]byte
}

// WatchRelease starts watching f's inode for closes of writable
// descriptors. Start it before the attempt whose failure makes you wait,
// so that a release between the two is not missed.
func (f *File) WatchRelease() (*ReleaseWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, &os.PathError{Op: "inotify_init1", Path: f.path, Err: err}
	}
	// The path names the locked inode while it is not replaced; a
	// replaced pidfile is a lock nobody waits for anyway (see Open).
	if _, err := unix.InotifyAddWatch(fd, f.path, unix.IN_CLOSE_WRITE|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "inotify_add_watch", Path: f.path, Err: err}
	}
	return &ReleaseWatch{f: os.NewFile(uintptr(fd), "inotify:"+f.path)}, nil
}

// Wait returns when a writable descriptor of the pidfile was closed since
// the last Wait, when d has passed, or when ctx is done, whichever is
// first. It does not say which: the caller tries the lock again.
func (w *ReleaseWatch) Wait(ctx context.Context, d time.Duration) {
	w.f.SetReadDeadline(time.Now().Add(d))
	stop := context.AfterFunc(ctx, func() { w.f.SetReadDeadline(time.Now()) })
	defer stop()
	w.f.Read(w.buf[:]) // drains every queued event
}

// Close ends the watch.
func (w *ReleaseWatch) Close() error { return w.f.Close() }
