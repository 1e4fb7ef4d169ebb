package pidfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
	"github.com/dirlockd/dirlockd/internal/proc"
)

// Method is a kind of kernel file lock.
//
// The kinds differ in ways that matter to an interlock:
//
//   - Flock (flock(2)) belongs to the open file description: children that
//     inherit the descriptor share it, it survives exec when the descriptor
//     is not close-on-exec, and it is released only when the last copy is
//     closed. On NFS and CIFS the kernel emulates it with a byte-range lock.
//   - OFD (F_OFD_SETLK, Linux 3.15+) is a whole-file fcntl lock with the same
//     ownership as flock: inherited, kept across exec, released on last close.
//     It is what NFS and most FUSE filesystems implement natively.
//   - POSIX (F_SETLK) belongs to the process. Children do NOT inherit it, so
//     a server started under the lock does not keep it when the wrapper dies;
//     and closing ANY descriptor of the file in the holding process releases
//     it, so the holding process must never open the pidfile a second time
//     (not even to read it). It is the last resort.
//
// Locally flock and fcntl locks do not conflict with each other; every lock
// taken here therefore also checks for a lock of the other family on the
// same file, so that holders forced onto different methods still exclude
// each other.
type Method int

// The methods. Auto tries Flock, then OFD, then POSIX, moving on only when the
// filesystem rejects a kind outright.
const (
	Auto Method = iota
	Flock
	OFD
	POSIX
)

var methodNames = [...]string{"auto", "flock", "ofd", "posix"}

func (m Method) String() string {
	if m < 0 || int(m) >= len(methodNames) {
		return fmt.Sprintf("Method(%d)", int(m))
	}
	return methodNames[m]
}

// MarshalText makes a Method print as its name in JSON and logs.
func (m Method) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// ParseMethod parses "auto", "flock", "ofd" or "posix".
func ParseMethod(s string) (Method, error) {
	for i, n := range methodNames {
		if s == n {
			return Method(i), nil
		}
	}
	return 0, fmt.Errorf("unknown lock method %q (want auto, flock, ofd or posix)", s)
}

// ErrLocked says another open file description holds the lock.
var ErrLocked = errors.New("pidfile is locked")

// ErrUnsupported says the filesystem rejects every lock method tried.
var ErrUnsupported = errors.New("lock method not supported by this filesystem")

// unsupported reports whether errno means "this filesystem cannot do this kind
// of lock" rather than "someone holds it". EBADF counts because the pidfile is
// always open read-write, so it cannot mean a read-only descriptor.
func unsupported(err error) bool {
	switch err {
	case unix.ENOLCK, unix.EOPNOTSUPP, unix.ENOSYS, unix.EINVAL, unix.EBADF:
		return true
	}
	return false
}

func busy(err error) bool {
	return err == unix.EWOULDBLOCK || err == unix.EAGAIN || err == unix.EACCES
}

func wholeFile(typ int16) *unix.Flock_t {
	return &unix.Flock_t{Type: typ, Whence: 0, Start: 0, Len: 0}
}

// place takes a lock of kind m (not Auto) without waiting.
func place(fd uintptr, m Method) error {
	return eintr.Retry(func() error {
		switch m {
		case Flock:
			return unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB)
		case OFD:
			return unix.FcntlFlock(fd, unix.F_OFD_SETLK, wholeFile(unix.F_WRLCK))
		default:
			return unix.FcntlFlock(fd, unix.F_SETLK, wholeFile(unix.F_WRLCK))
		}
	})
}

func remove(fd uintptr, m Method) error {
	return eintr.Retry(func() error {
		switch m {
		case Flock:
			return unix.Flock(int(fd), unix.LOCK_UN)
		case OFD:
			return unix.FcntlFlock(fd, unix.F_OFD_SETLK, wholeFile(unix.F_UNLCK))
		default:
			return unix.FcntlFlock(fd, unix.F_SETLK, wholeFile(unix.F_UNLCK))
		}
	})
}

// lock takes the lock with method want, falling back as Auto allows. It
// returns the method that holds the lock.
func (f *File) lock(want Method) (Method, error) {
	chain := []Method{want}
	if want == Auto {
		chain = f.autoChain()
	}
	fd := f.f.Fd()
	var tried []string
	for _, m := range chain {
		err := place(fd, m)
		switch {
		case err == nil:
			if other := f.otherFamilyHeld(m); other != "" {
				remove(fd, m)
				return 0, fmt.Errorf("%w: %s: %s holds it (all holders of a data directory must use the same lock method)", ErrLocked, f.path, other)
			}
			return m, nil
		case busy(err):
			return 0, fmt.Errorf("%w: %s (%s)", ErrLocked, f.path, m)
		case unsupported(err):
			tried = append(tried, fmt.Sprintf("%s: %v", m, err))
		default:
			return 0, &os.PathError{Op: m.String() + " lock", Path: f.path, Err: err}
		}
	}
	return 0, fmt.Errorf("%w: %s: %v", ErrUnsupported, f.path, tried)
}

// autoChain is the order in which Auto tries the lock methods: flock, OFD,
// POSIX, leaving out a kind that the mount options say stays on this host
// (NFS local_lock=flock keeps flock local but sends fcntl locks to the
// server) unless every kind does.
func (f *File) autoChain() []Method {
	all := []Method{Flock, OFD, POSIX}
	fs, err := f.Filesystem()
	if err != nil || fs.LocalOnly(Auto) != "" {
		return all
	}
	return slices.DeleteFunc(all, func(m Method) bool { return fs.LocalOnly(m) != "" })
}

// otherFamilyHeld looks for a lock that does not conflict with one of kind m
// but guards the same file: an fcntl lock when we hold a flock, a flock when
// we hold an fcntl lock. It returns the other kind's name, or "".
func (f *File) otherFamilyHeld(m Method) string {
	if m == Flock {
		lk := wholeFile(unix.F_WRLCK)
		err := eintr.Retry(func() error { return unix.FcntlFlock(f.f.Fd(), unix.F_OFD_GETLK, lk) })
		if err == nil && lk.Type != unix.F_UNLCK {
			return "another process, with an fcntl lock,"
		}
		return ""
	}
	locks, err := proc.Locks(f.dev, f.ino)
	if err != nil {
		return ""
	}
	for _, l := range locks {
		if l.Kind == "FLOCK" {
			return fmt.Sprintf("PID %d, with a flock,", l.PID)
		}
	}
	return ""
}

// ErrNoKernelWait says that LockWait does not block in the kernel for this
// pidfile: the lock method is POSIX, or the filesystem is shared storage.
// Wait with a ReleaseWatch and TryLock instead.
var ErrNoKernelWait = errors.New("no blocking wait in the kernel for this lock")

// ErrReplaced says that the pidfile's path no longer names the file this
// File opened: it was removed or replaced. Whoever waits for the lock opens
// the pidfile again; a lock on the old inode guards nothing.
var ErrReplaced = errors.New("pidfile was replaced")

// LockWait takes the lock as TryLock does, but when it is busy blocks in
// the kernel (flock without LOCK_NB, F_OFD_SETLKW) until the holder lets
// go, so that the kernel hands the released lock to a waiter at once,
// before the releaser can take it back. It returns ctx's error when ctx is
// done first.
//
// The wait runs on a goroutine with a descriptor of its own, opened for
// it: Go's signal handlers are installed with SA_RESTART, so a blocked
// flock cannot be interrupted, only abandoned. A cancelled LockWait returns
// at once, and the abandoned goroutine, if the lock is ever granted to it,
// releases it and closes its descriptor at once, writing nothing (until
// then it keeps a thread and that descriptor). Once the lock is granted the
// path must still name the same inode (ErrReplaced otherwise), and the
// granted descriptor becomes f's.
//
// It is offered only for flock and OFD locks on local filesystems
// (ErrNoKernelWait otherwise). A POSIX lock belongs to the process, and
// the waiter's close of its own descriptor would drop it. On shared
// storage a blocked request depends on the server's callbacks (NLM grant
// messages through firewalls, FUSE daemons, CIFS oplocks) that may never
// come, and a lock granted to an abandoned waiter on a server is not
// promptly let go if the client is cut off: waiters there try again on
// their own clock.
func (f *File) LockWait(ctx context.Context, m Method) error {
	if f.locked {
		return nil
	}
	const flags = unix.O_RDWR | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	fd, err := openRetry(f.path, flags)
	if err == unix.ENOENT {
		return fmt.Errorf("%w: %s is gone", ErrReplaced, f.path)
	}
	if err != nil {
		return openError(f.path, "pidfile", err)
	}
	if err := f.sameInode(fd, f.path); err != nil {
		closeFile(os.NewFile(uintptr(fd), f.path), f.dev, f.ino, nil)
		return err
	}
	if m, err = f.kernelWaitMethod(m); err != nil {
		closeFile(os.NewFile(uintptr(fd), f.path), f.dev, f.ino, nil)
		return err
	}
	granted, abandoned := make(chan error), make(chan struct{})
	go func() {
		err := eintr.Retry(func() error { return placeWaiting(uintptr(fd), m) })
		select {
		case granted <- err:
		case <-abandoned:
			if err == nil {
				remove(uintptr(fd), m)
			}
			closeFile(os.NewFile(uintptr(fd), f.path), f.dev, f.ino, nil)
		}
	}()
	select {
	case err = <-granted:
	case <-ctx.Done():
		close(abandoned)
		return fmt.Errorf("wait for the lock of %s: %w", f.path, ctx.Err())
	}
	of := os.NewFile(uintptr(fd), f.path)
	if err != nil {
		closeFile(of, f.dev, f.ino, nil)
		if busy(err) || unsupported(err) {
			return fmt.Errorf("%w: blocking %s lock of %s: %v", ErrNoKernelWait, m, f.path, err)
		}
		return &os.PathError{Op: m.String() + " lock (waiting)", Path: f.path, Err: err}
	}
	// Granted. The path may have been given to another file meanwhile
	// (renamed over, removed and created again): starters now lock that
	// one.
	var st unix.Stat_t
	if err := unix.Stat(f.path, &st); err != nil || st.Dev != f.dev || st.Ino != f.ino {
		remove(uintptr(fd), m)
		closeFile(of, f.dev, f.ino, nil)
		return fmt.Errorf("%w: %s names another file than the one whose lock was granted", ErrReplaced, f.path)
	}
	if other := f.otherFamilyHeld(m); other != "" {
		remove(uintptr(fd), m)
		closeFile(of, f.dev, f.ino, nil)
		return fmt.Errorf("%w: %s: %s holds it (all holders of a data directory must use the same lock method)", ErrLocked, f.path, other)
	}
	old := f.f
	err = f.register(func() error {
		f.f, f.method, f.locked = of, m, true
		f.listed, _ = proc.OwnFDLocked(fd)
		return nil
	})
	if err != nil {
		remove(uintptr(fd), m)
		closeFile(of, f.dev, f.ino, nil)
		return err
	}
	// The old descriptor holds no lock, and no POSIX lock of this process
	// is on the inode (f holds it), so its close drops nothing.
	old.Close()
	clearNonblock(fd, flags)
	return nil
}

// kernelWaitMethod is the method LockWait blocks with for m, or
// ErrNoKernelWait.
func (f *File) kernelWaitMethod(m Method) (Method, error) {
	fs, err := f.Filesystem()
	if err != nil || fs.Shared() {
		return 0, fmt.Errorf("%w: %s is on shared storage", ErrNoKernelWait, f.path)
	}
	if m == Auto {
		m = f.autoChain()[0]
	}
	if m != Flock && m != OFD {
		return 0, fmt.Errorf("%w: %s locks belong to the process", ErrNoKernelWait, m)
	}
	return m, nil
}

// sameInode refuses a descriptor, opened by path, that is not of f's
// inode.
func (f *File) sameInode(fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Dev != f.dev || st.Ino != f.ino {
		return fmt.Errorf("%w: %s now names inode %d, not %d", ErrReplaced, path, st.Ino, f.ino)
	}
	return nil
}

// placeWaiting takes a lock of kind m (Flock or OFD), blocking until it is
// granted.
func placeWaiting(fd uintptr, m Method) error {
	if m == Flock {
		return unix.Flock(int(fd), unix.LOCK_EX)
	}
	return unix.FcntlFlock(fd, unix.F_OFD_SETLKW, wholeFile(unix.F_WRLCK))
}

// probe reports whether the lock is free by taking it with method m and
// dropping it at once; it returns nil when free, an error wrapping ErrLocked
// when held. For fcntl kinds it only tests (F_OFD_GETLK / F_GETLK), taking
// nothing.
func (f *File) probe(m Method) error {
	fd := f.f.Fd()
	if m == OFD || m == POSIX {
		cmd := unix.F_OFD_GETLK
		if m == POSIX {
			cmd = unix.F_GETLK
		}
		lk := wholeFile(unix.F_WRLCK)
		if err := eintr.Retry(func() error { return unix.FcntlFlock(fd, cmd, lk) }); err != nil {
			return &os.PathError{Op: m.String() + " test", Path: f.path, Err: err}
		}
		if lk.Type != unix.F_UNLCK {
			return fmt.Errorf("%w: %s (%s)", ErrLocked, f.path, m)
		}
		if other := f.otherFamilyHeld(m); other != "" {
			return fmt.Errorf("%w: %s: %s", ErrLocked, f.path, other)
		}
		return nil
	}
	m, err := f.lock(m)
	if err != nil {
		return err
	}
	return remove(fd, m)
}
