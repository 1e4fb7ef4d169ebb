package pidfile

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/users"
)

// File is an open pidfile, locked or not.
type File struct {
	f        *os.File
	path     string
	dir      string
	dev, ino uint64
	uid      uint32 // the file's owner
	dirOwner uint32 // the data directory's owner
	// dirDev and dirIno identify the data directory, from the descriptor
	// the pidfile was opened through.
	dirDev, dirIno uint64
	created        bool   // Open created the file: it held no record before this process
	dirDirty       bool   // created, and the directory entry not yet fsynced (the first durable write does it)
	method         Method // method holding the lock; valid while locked
	locked         bool
	noSync         bool
	fs             *Filesystem // looked up on first use
	// listed says that the kernel listed the lock in the descriptor's
	// fdinfo when it was taken, so that CheckLock can ask it again. A
	// filesystem that keeps its locks on the server (FUSE with lock
	// operations) never lists them.
	listed bool
	parked []*os.File // descriptors of this inode closed while held; see registry.go
}

// Open checks the data directory and opens (creating if needed) its pidfile
// without locking it. A pidfile this process already holds (through another
// File) is not opened again: Open fails with a *LockedHereError, as a second
// descriptor's close would drop a POSIX lock.
func Open(dir string, opts Options) (*File, error) {
	d, path, err := openPidfileDir(dir, ForStart, opts)
	if err != nil {
		return nil, err
	}
	defer d.close()
	if h := heldAt(path); h != nil {
		return nil, h.lockedHere(path)
	}
	const flags = unix.O_RDWR | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	// The pidfile is nearly always there already (it is never unlinked):
	// open it, and create it only when it is not.
	created := false
	name := opts.name()
	fd, err := openIn(d, name, flags)
	if err == unix.ENOENT {
		created = true
		if fd, err = openIn(d, name, flags|unix.O_CREAT|unix.O_EXCL); err == unix.EEXIST {
			created = false
			fd, err = openIn(d, name, flags) // another starter created it first
		}
	}
	if err != nil {
		return nil, openError(path, "pidfile", err)
	}
	f, err := newFile(fd, flags, path, d, "pidfile", ForStart)
	if err != nil {
		return nil, err
	}
	f.created, f.dirDirty, f.noSync = created, created, opts.NoSync
	return f, nil
}

// OpenInDir opens the file name of the data directory dir with flag
// (O_CREAT creates it 0600) under the rules the pidfile obeys, for other
// files dirlockd writes there (the stress witnesses): never through a
// symbolic link, and only a file that is provably ours to write (see
// newFile). Anything else is an *InvalidError.
func OpenInDir(dir, name string, flag int) (*os.File, error) {
	d, err := openDir(dir, ForStart)
	if err != nil {
		return nil, err
	}
	defer d.close()
	if err := checkName(d.abs, name); err != nil {
		return nil, err
	}
	path := filepath.Join(d.abs, name)
	flag |= unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	fd, err := openIn(d, name, flag)
	if err != nil {
		return nil, openError(path, "file", err)
	}
	f, err := newFile(fd, flag, path, d, "file", ForStart)
	if err != nil {
		return nil, err
	}
	return f.f, nil
}

// openIn opens the file name of the open data directory d: relative to its
// descriptor, never through its path again.
func openIn(d *dataDir, name string, flags int) (int, error) {
	return eintr.Openat(d.fd, name, flags, 0o600)
}

func openRetry(path string, flags int) (int, error) {
	return eintr.Openat(unix.AT_FDCWD, path, flags, 0o600)
}

// openError explains why the open of what (the "pidfile") at path failed.
func openError(path, what string, err error) error {
	e := &InvalidError{Path: path, Problem: "cannot open " + what, Err: err}
	switch err {
	case unix.ELOOP:
		e.Problem, e.Err = what+" is a symbolic link; dirlockd does not follow links here", nil
		e.Fix = "remove the link: rm " + path
	case unix.EISDIR:
		e.Problem, e.Err = what+" is a directory", nil
		e.Fix = "remove or rename it"
	case unix.EACCES, unix.EPERM:
		e.Fix = fmt.Sprintf("the data directory and %s must be writable by uid %d", what, os.Geteuid())
	case unix.EROFS:
		e.Fix = "the data directory is on a read-only filesystem"
	case unix.ENXIO, unix.ENODEV:
		e.Problem, e.Err = what+" is a socket, a device or a FIFO", nil
		e.Fix = "remove it: it is not dirlockd's"
	}
	return e
}

// newFile checks an opened descriptor and wraps it. It takes ownership of fd,
// opened with flags. what names the file in errors ("pidfile"); dirOwner
// owns the data directory dir, and use says what the caller will do with the
// file: a file to write must be the caller's own, one only read may also
// belong to the directory's owner or to root (the holder's uid when root
// inspects a service user's directory).
//
// The checks refuse every file that is not provably ours alone to write: not
// a regular file, another owner, writable by others, or an inode that is
// also reachable from outside the data directory, through another hard link
// or a bind mount over the name. Writing a record into such a file would
// change a file that is not dirlockd's. They run on the descriptor right
// after the open, before anything locks, reads or writes it.
func newFile(fd, flags int, path string, d *dataDir, what string, use Use) (*File, error) {
	dir, dirOwner := d.abs, d.owner()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &InvalidError{Path: path, Problem: "cannot stat " + what, Err: err}
	}
	bad := checkLinks(path, what, &st)
	switch {
	case bad != nil:
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		bad = &InvalidError{Path: path, Problem: what + " is not a regular file", Fix: "remove it: it is not dirlockd's"}
	case !mayOwn(st.Uid, dirOwner, use):
		bad = &InvalidError{Path: path,
			Problem: fmt.Sprintf("%s is owned by %s, not by %s, who runs dirlockd", what, users.Name(st.Uid), users.Name(uint32(os.Geteuid()))),
			Fix:     fmt.Sprintf("run as %s, or remove it if no instance of that user runs here", users.Login(st.Uid))}
	case st.Mode&0o022 != 0:
		bad = &InvalidError{Path: path,
			Problem: fmt.Sprintf("%s is group- or world-writable (mode %04o)", what, st.Mode&0o7777),
			Fix:     "chmod 0600 " + path}
	default:
		bad = checkMount(fd, path, d.fd, what)
	}
	if bad != nil {
		closeFile(os.NewFile(uintptr(fd), path), st.Dev, st.Ino, nil)
		return nil, bad
	}
	clearNonblock(fd, flags)
	return &File{f: os.NewFile(uintptr(fd), path), path: path, dir: dir, dev: st.Dev, ino: st.Ino, uid: st.Uid, dirOwner: dirOwner,
		dirDev: d.st.Dev, dirIno: d.st.Ino}, nil
}

// mayOwn says whether uid may own a file of a data directory owned by
// dirOwner that the caller uses for use: the caller's own, or for a look
// also the directory owner's or root's.
func mayOwn(uid, dirOwner uint32, use Use) bool {
	euid := uint32(os.Geteuid())
	return uid == euid || use == ForLook && (uid == dirOwner || uid == 0)
}

// clearNonblock clears O_NONBLOCK, which only guarded the open against a
// FIFO in the file's place, from fd, opened with flags. F_SETFL sets the
// status flags (O_APPEND and O_NONBLOCK among them) and ignores the
// access mode and creation flags, so the open's own flags tell what to
// set, without an F_GETFL first.
func clearNonblock(fd, flags int) {
	unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_NONBLOCK)
}

// checkLinks refuses a file whose inode has another name, or none: a hard
// link elsewhere would receive every write too. (A directory or other
// non-regular file is refused by the type check instead.)
func checkLinks(path, what string, st *unix.Stat_t) *InvalidError {
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink == 1 {
		return nil
	}
	if st.Nlink == 0 {
		return &InvalidError{Path: path,
			Problem: what + " was deleted while it was open: its inode has no name any more",
			Fix:     "try again; if it keeps happening, find what deletes files in the data directory"}
	}
	return &InvalidError{Path: path,
		Problem: fmt.Sprintf("%s has %d links: another name elsewhere shares this inode, and writing would change that file too", what, st.Nlink),
		Fix: fmt.Sprintf("remove the extra link (find it with: find / -xdev -inum %d), or remove this %s if it is not dirlockd's",
			st.Ino, what)}
}

// checkMount refuses a file that sits on another mount than its directory:
// something is bind-mounted over its name, and writes would go to the
// mounted file. Comparing mount ids (not st_dev) also catches a bind mount
// of a file of the same filesystem, and does not misfire on overlayfs,
// whose files may report another device than their directory. A kernel
// without STATX_MNT_ID (before 5.8) cannot tell, and is let through.
func checkMount(fd int, path string, dirfd int, what string) *InvalidError {
	var fx, dx unix.Statx_t
	if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &fx) != nil ||
		unix.Statx(dirfd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &dx) != nil ||
		fx.Mask&dx.Mask&unix.STATX_MNT_ID == 0 || fx.Mnt_id == dx.Mnt_id {
		return nil
	}
	return &InvalidError{Path: path,
		Problem: fmt.Sprintf("%s is a mount point (mount %d; the data directory is on mount %d): another file is bind-mounted over it, and writing would change that file",
			what, fx.Mnt_id, dx.Mnt_id),
		Fix: "umount " + path + ", or use a data directory with no mounts inside"}
}

// Created reports whether Open created the file, as opposed to finding it.
// An existing file that is empty was left by a start that died before it
// wrote its first record.
func (f *File) Created() bool { return f.created }

// Path returns the pidfile's path.
func (f *File) Path() string { return f.path }

// Dir returns the data directory's absolute path.
func (f *File) Dir() string { return f.dir }

// ID returns the pidfile's device and inode numbers.
func (f *File) ID() (dev, ino uint64) { return f.dev, f.ino }

// Owner returns the uid that owns the file; DirOwner the uid that owns the
// data directory.
func (f *File) Owner() uint32 { return f.uid }

// DirID returns the data directory's device and inode numbers, from the
// descriptor the pidfile was opened through.
func (f *File) DirID() (dev, ino uint64) { return f.dirDev, f.dirIno }

// DirOwner returns the uid that owns the data directory.
func (f *File) DirOwner() uint32 { return f.dirOwner }

// Method returns the lock method that holds the lock, if it is held.
func (f *File) Method() Method { return f.method }

// Filesystem describes the filesystem the pidfile is on. It is looked up
// once and remembered.
func (f *File) Filesystem() (Filesystem, error) {
	if f.fs == nil {
		fs, err := statFD(int(f.f.Fd()), f.path)
		if err != nil {
			return fs, err
		}
		f.fs = &fs
	}
	return *f.fs, nil
}

// OS returns the underlying file, to hand to a child process that should
// keep the lock (the descriptor is close-on-exec until passed through
// exec.Cmd.ExtraFiles). Keep f reachable while it is in use: dropping the
// last reference lets the finalizer close it, releasing the lock.
func (f *File) OS() *os.File { return f.f }

// TryLock takes the lock with the requested method, without waiting. It
// fails wrapping ErrLocked when another holder has it, and ErrUnsupported
// when the filesystem accepts none of the methods allowed.
//
// It fails with a *LockedHereError when another File of this process holds
// the same file: POSIX locks of one process do not exclude each other.
func (f *File) TryLock(m Method) error {
	if f.locked {
		return nil
	}
	err := f.register(func() error {
		got, err := f.lock(m)
		if err != nil {
			return err
		}
		f.method, f.locked = got, true
		f.listed, _ = proc.OwnFDLocked(int(f.f.Fd()))
		return nil
	})
	return err
}

// CheckLock asks the kernel whether the lock is still held through f's
// descriptor. A POSIX lock vanishes when any descriptor of the file in this
// process is closed; the code of this package never does so, but other code
// of the process may. On a filesystem that keeps its locks away from the
// kernel's table (FUSE with lock operations) the kernel cannot say, and
// CheckLock trusts the lock.
func (f *File) CheckLock() error {
	if !f.locked {
		return fmt.Errorf("%s: not locked", f.path)
	}
	if !f.listed {
		return nil
	}
	ok, err := proc.OwnFDLocked(int(f.f.Fd()))
	if err != nil {
		return fmt.Errorf("%s: ask the kernel for the lock of descriptor %d: %w", f.path, f.f.Fd(), err)
	}
	if !ok {
		why := "something unlocked it"
		if f.method == POSIX {
			why = "a POSIX lock is dropped when this process closes any descriptor of the file"
		}
		return fmt.Errorf("%s: the kernel no longer lists our %s lock on descriptor %d (%s)", f.path, f.method, f.f.Fd(), why)
	}
	return nil
}

// Close closes the file, which releases the lock unless other processes
// share the locked open file description (children that inherited it): they
// keep holding it, and so keep witnessing that the directory is in use. The
// file itself stays where it is. Nothing here releases the lock for them: a
// holder's children may still be at work in the directory (docs/design.md).
func (f *File) Close() error {
	f.locked = false
	return closeFile(f.f, f.dev, f.ino, f)
}

// Holders returns the live processes, visible from our PID namespace, that
// hold a lock on this pidfile, according to the kernel.
func (f *File) Holders() ([]int, error) {
	return proc.LockHolders(f.dev, f.ino)
}

// Changed returns the pidfile's status-change time (ctime), which the
// kernel sets on every write and truncation and nobody can set back: it
// tells a record the last writer left from one put there later (restored,
// copied in place).
func (f *File) Changed() (time.Time, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.f.Fd()), &st); err != nil {
		return time.Time{}, &os.PathError{Op: "fstat", Path: f.path, Err: err}
	}
	return time.Unix(st.Ctim.Unix()), nil
}
