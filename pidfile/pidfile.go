// Package pidfile claims and reads the lock file that guards a data
// directory.
//
// The pidfile lives inside the data directory. Whoever holds a kernel lock on
// it (flock, or an fcntl lock where flock is not supported) holds the
// directory; the PID written in it is a hint for humans and tools, never the
// proof. The file is never unlinked: a starter blocked on the lock of a file
// that is then unlinked would hold the lock of a name nobody else can find,
// and a third process would create a new file and lock that one too. Content
// is rewritten in place instead, and marked "stopped" on a clean release.
//
// A read yields one of three outcomes, as in Neon's pid_file module: the file
// does not exist; nobody holds it (the record is stale); or somebody holds it.
// Claim takes the lock and hands the caller the old record under it; Read only
// looks, and on a local filesystem asks the kernel who holds the lock instead
// of taking it, so that a boot script's check cannot make a concurrent start
// fail.
package pidfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
	"github.com/dirlockd/dirlockd/internal/proc"
)

// DefaultName is the pidfile's name inside the data directory.
const DefaultName = "dirlockd.pid"

// ErrInvalid is wrapped by every error that says the data directory or the
// pidfile is unfit to carry the interlock (wrong owner, wrong mode, wrong
// type, unreadable). The error says which and how to fix it.
var ErrInvalid = errors.New("invalid data directory or pidfile")

// InvalidError describes why a data directory or pidfile was refused.
type InvalidError struct {
	Path    string // the offending path
	Problem string // what is wrong
	Fix     string // what to do about it, if known
	Err     error  // underlying cause, if any
}

func (e *InvalidError) Error() string {
	s := e.Path + ": " + e.Problem
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	if e.Fix != "" {
		s += " (" + e.Fix + ")"
	}
	return s
}

func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }
func (e *InvalidError) Unwrap() error        { return e.Err }

// Options select the pidfile and how it is locked.
type Options struct {
	Name   string // file name inside the data directory; DefaultName if empty
	Method Method // Auto if zero
	NoSync bool   // skip fsync on write; for benchmarks only, unsafe
}

func (o Options) name() string {
	if o.Name == "" {
		return DefaultName
	}
	return o.Name
}

// File is an open pidfile, locked or not.
type File struct {
	f        *os.File
	path     string
	dir      string
	dev, ino uint64
	created  bool   // we created it: fsync the directory on first write
	isNew    bool   // Open created it (never written before this process)
	method   Method // method holding the lock; valid while locked
	locked   bool
	noSync   bool
	fs       *Filesystem // looked up on first use
	// listed says that the kernel listed the lock in the descriptor's
	// fdinfo when it was taken, so that CheckLock can ask it again. A
	// filesystem that keeps its locks on the server (FUSE with lock
	// operations) never lists them.
	listed bool
	parked []*os.File // descriptors of this inode closed while held; see registry.go
}

// CheckDir verifies that dir can carry the interlock: an existing directory,
// owned by the effective uid, not writable by group or others (anyone who can
// write there can replace the pidfile). It returns the cleaned absolute path.
func CheckDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", &InvalidError{Path: dir, Problem: "cannot resolve path", Err: err}
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		fix := ""
		if err == unix.ENOENT {
			fix = "create it with: install -d -m 0700 " + abs
		}
		return "", &InvalidError{Path: abs, Problem: "data directory not accessible", Fix: fix, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", &InvalidError{Path: abs, Problem: "data directory is not a directory"}
	}
	euid := os.Geteuid()
	if int(st.Uid) != euid {
		return "", &InvalidError{Path: abs,
			Problem: fmt.Sprintf("data directory is owned by uid %d, not by the effective uid %d", st.Uid, euid),
			Fix:     fmt.Sprintf("run as uid %d, or chown %d %s", st.Uid, euid, abs)}
	}
	if st.Mode&0o022 != 0 {
		return "", &InvalidError{Path: abs,
			Problem: fmt.Sprintf("data directory is group- or world-writable (mode %04o)", st.Mode&0o7777),
			Fix:     "chmod go-w " + abs}
	}
	return abs, nil
}

// checkName refuses a pidfile name that is not a plain name inside the data
// directory: "../x" or "a/b" would put the lock outside the directory the
// checks were made on.
func checkName(dir, name string) error {
	if name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return &InvalidError{Path: filepath.Join(dir, name),
			Problem: fmt.Sprintf("pidfile name %q is not a file name inside the data directory", name),
			Fix:     "name a file of the data directory, without /"}
	}
	return nil
}

// Open checks the data directory and opens (creating if needed) its pidfile
// without locking it. A pidfile this process already holds (through another
// File) is not opened again: Open fails with a *LockedHereError, as a second
// descriptor's close would drop a POSIX lock.
func Open(dir string, opts Options) (*File, error) {
	abs, err := CheckDir(dir)
	if err != nil {
		return nil, err
	}
	if err := checkName(abs, opts.name()); err != nil {
		return nil, err
	}
	path := filepath.Join(abs, opts.name())
	if h := heldAt(path); h != nil {
		return nil, h.lockedHere(path)
	}
	const flags = unix.O_RDWR | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	// The pidfile is nearly always there already (it is never unlinked):
	// open it, and create it only when it is not.
	created := false
	fd, err := openRetry(path, flags)
	if err == unix.ENOENT {
		created = true
		if fd, err = openRetry(path, flags|unix.O_CREAT|unix.O_EXCL); err == unix.EEXIST {
			created = false
			fd, err = openRetry(path, flags) // another starter created it first
		}
	}
	if err != nil {
		return nil, openError(path, "pidfile", err)
	}
	f, err := newFile(fd, flags, path, abs, "pidfile")
	if err != nil {
		return nil, err
	}
	f.created, f.isNew, f.noSync = created, created, opts.NoSync
	return f, nil
}

// OpenInDir opens the file name of the data directory dir with flag
// (O_CREAT creates it 0600) under the rules the pidfile obeys, for other
// files dirlockd writes there (the stress witnesses): never through a
// symbolic link, and only a file that is provably ours to write (see
// newFile). Anything else is an *InvalidError.
func OpenInDir(dir, name string, flag int) (*os.File, error) {
	abs, err := CheckDir(dir)
	if err != nil {
		return nil, err
	}
	if err := checkName(abs, name); err != nil {
		return nil, err
	}
	path := filepath.Join(abs, name)
	flag |= unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	fd, err := openRetry(path, flag)
	if err != nil {
		return nil, openError(path, "file", err)
	}
	f, err := newFile(fd, flag, path, abs, "file")
	if err != nil {
		return nil, err
	}
	return f.f, nil
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
// opened with flags. what names the file in errors ("pidfile").
//
// The checks refuse every file that is not provably ours alone to write: not
// a regular file, another owner, writable by others, or an inode that is
// also reachable from outside the data directory, through another hard link
// or a bind mount over the name. Writing a record into such a file would
// change a file that is not dirlockd's. They run on the descriptor right
// after the open, before anything locks, reads or writes it.
func newFile(fd, flags int, path, dir, what string) (*File, error) {
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
	case int(st.Uid) != os.Geteuid():
		bad = &InvalidError{Path: path,
			Problem: fmt.Sprintf("%s is owned by uid %d, not by the effective uid %d", what, st.Uid, os.Geteuid()),
			Fix:     "run as its owner, or remove it if no instance of that user runs here"}
	case st.Mode&0o022 != 0:
		bad = &InvalidError{Path: path,
			Problem: fmt.Sprintf("%s is group- or world-writable (mode %04o)", what, st.Mode&0o7777),
			Fix:     "chmod 0600 " + path}
	default:
		bad = checkMount(fd, path, dir, what)
	}
	if bad != nil {
		closeFile(os.NewFile(uintptr(fd), path), st.Dev, st.Ino, nil)
		return nil, bad
	}
	clearNonblock(fd, flags)
	return &File{f: os.NewFile(uintptr(fd), path), path: path, dir: dir, dev: st.Dev, ino: st.Ino}, nil
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
func checkMount(fd int, path, dir, what string) *InvalidError {
	var fx, dx unix.Statx_t
	if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &fx) != nil ||
		unix.Statx(unix.AT_FDCWD, dir, 0, unix.STATX_MNT_ID, &dx) != nil ||
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
func (f *File) Created() bool { return f.isNew }

// Path returns the pidfile's path.
func (f *File) Path() string { return f.path }

// Dir returns the data directory's absolute path.
func (f *File) Dir() string { return f.dir }

// ID returns the pidfile's device and inode numbers.
func (f *File) ID() (dev, ino uint64) { return f.dev, f.ino }

// Method returns the lock method that holds the lock, if it is held.
func (f *File) Method() Method { return f.method }

// Filesystem describes the filesystem the pidfile is on. It is looked up
// once and remembered.
func (f *File) Filesystem() (Filesystem, error) {
	if f.fs == nil {
		fs, err := StatFS(f.path)
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

// Unlock releases the lock but keeps the file open.
func (f *File) Unlock() error {
	if !f.locked {
		return nil
	}
	f.unregister()
	f.locked = false
	if err := remove(f.f.Fd(), f.method); err != nil {
		return &os.PathError{Op: "unlock", Path: f.path, Err: err}
	}
	return nil
}

// Close closes the file, which releases the lock unless other processes
// share the locked open file description (children that inherited it): they
// keep holding it, and so keep witnessing that the directory is in use. The
// file itself stays where it is. Use Unlock to release the lock for everyone.
func (f *File) Close() error {
	f.locked = false
	return closeFile(f.f, f.dev, f.ino, f)
}

// Claim opens the pidfile in dir and locks it. The caller holds the data
// directory until it closes the returned File; the previous holder's record
// is then available from ReadRecord.
func Claim(dir string, opts Options) (*File, error) {
	f, err := Open(dir, opts)
	if err != nil {
		return nil, err
	}
	if err := f.TryLock(opts.Method); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ReadRecord returns the pidfile's content and its parsed record. A file
// that is empty has neither; content that is not an intact record comes back
// with an error wrapping ErrMalformed. Content that changes while it is read
// (a concurrent writer) is read again, so a torn record is never accepted.
//
// On a shared filesystem the cached pages are dropped first: another host's
// write does not invalidate this host's page cache until its attributes are
// revalidated, which on NFS can take a minute.
func (f *File) ReadRecord() (*Record, []byte, error) {
	if fs, err := f.Filesystem(); err == nil && fs.Shared() {
		unix.Fadvise(int(f.f.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
	return readRecord(f.f, f.path)
}

func readRecord(f *os.File, path string) (*Record, []byte, error) {
	// A malformed read is final only once the content has stayed the same
	// for a while: a writer between its write and its truncate can stall
	// for milliseconds, and the next read of its work may be whole.
	const settle, giveUp = 20 * time.Millisecond, 500 * time.Millisecond
	var prev []byte
	var since, start time.Time
	for {
		b, err := readAll(f)
		if err != nil {
			return nil, nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if len(b) == 0 {
			return nil, nil, nil
		}
		r, perr := Parse(b)
		if perr == nil {
			return r, b, nil
		}
		now := time.Now()
		if start.IsZero() {
			start = now
		}
		if !bytes.Equal(b, prev) {
			prev, since = b, now
		}
		if now.Sub(since) >= settle || now.Sub(start) >= giveUp {
			return nil, b, fmt.Errorf("%s: %w", path, perr)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// readAll reads up to MaxSize+1 bytes: one more than a record may have, so
// that an oversized file shows. It reads with one pread into a buffer that
// fits any record dirlockd writes: a read of a regular file that comes
// back shorter than asked for has reached its end (a write racing it can
// make the content torn, never the read short of what it found, and a
// torn record is read again by readRecord). A file that fills the buffer
// is read again at full size.
//
// The read goes through the descriptor's raw connection, which keeps it
// from being closed (and its number reused) during the read, as ReadAt
// does; a File closed meanwhile fails with os.ErrClosed.
func readAll(f *os.File) ([]byte, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	for size := 4 << 10; ; size = MaxSize + 1 {
		buf := make([]byte, size)
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			rerr = eintr.Retry(func() (err error) {
				n, err = unix.Pread(int(fd), buf, 0)
				return err
			})
			return true
		}); err != nil {
			return nil, os.ErrClosed // the only way a raw read of a file fails
		}
		if rerr != nil {
			return nil, rerr
		}
		if n < size || size == MaxSize+1 {
			return buf[:n], nil
		}
	}
}

// Write replaces the record: one write of the whole record at offset 0,
// truncation to its length, fsync (and an fsync of the directory after the
// file was created). The caller must hold the lock.
func (f *File) Write(r *Record) error { return f.write(r, true) }

// Amend replaces the record as Write does, but fsyncs it only where another
// host may read it (shared storage, where the fsync is also what reports a
// lost lock). On a local filesystem every reader shares this kernel's page
// cache, and a crash of the kernel makes the record's PIDs and segment
// meaningless anyway (its boot ID no longer matches): an amendment that only
// informs (status, child PIDs, a heartbeat) need not wait for the disk.
// What must survive a power loss, the record naming a new holder and the
// clean release, goes through Write.
func (f *File) Amend(r *Record) error {
	fs, err := f.Filesystem()
	return f.write(r, err != nil || fs.Shared())
}

func (f *File) write(r *Record, durable bool) error {
	if !f.locked {
		return fmt.Errorf("write %s: lock not held", f.path)
	}
	// The inode may have gained a name since it was opened: then the write
	// would change that file too. (A link made between this check and the
	// write is not seen; Lock.Check looks again.)
	var st unix.Stat_t
	if err := unix.Fstat(int(f.f.Fd()), &st); err != nil {
		return fmt.Errorf("write pidfile: %w", &os.PathError{Op: "fstat", Path: f.path, Err: err})
	}
	if bad := checkLinks(f.path, "pidfile", &st); bad != nil {
		return fmt.Errorf("write pidfile: refused: %w", bad)
	}
	b := r.Marshal()
	n, err := f.f.WriteAt(b, 0)
	if err == nil && n < len(b) {
		err = unix.ENOSPC // a short write with no error means out of space
	}
	// A file no longer than the record is now exactly the record; only a
	// longer one keeps a tail to cut.
	if err == nil && st.Size > int64(len(b)) {
		err = f.f.Truncate(int64(len(b)))
	}
	if err == nil && durable && !f.noSync {
		err = f.f.Sync()
	}
	if err != nil {
		return fmt.Errorf("write pidfile: %w", err)
	}
	if f.created && durable && !f.noSync {
		if err := syncDir(f.dir); err != nil {
			return fmt.Errorf("write pidfile: %w", err)
		}
	}
	if durable {
		f.created = false
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Holders returns the live processes, visible from our PID namespace, that
// hold a lock on this pidfile, according to the kernel.
func (f *File) Holders() ([]int, error) {
	return proc.LockHolders(f.dev, f.ino)
}

// Outcome is what a Read found.
type Outcome int

// The outcomes of Read.
const (
	NotExist Outcome = iota // no pidfile: nobody has held this directory, or it was cleaned up by hand
	NotHeld                 // pidfile present, lock free: the record, if any, is stale
	Held                    // somebody holds the lock
)

func (o Outcome) String() string {
	switch o {
	case NotExist:
		return "not there"
	case NotHeld:
		return "not held"
	case Held:
		return "held"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Reading is the result of Read.
type Reading struct {
	Outcome Outcome
	Path    string
	Dev     uint64 // the pidfile's device and inode, when it exists
	Ino     uint64
	Record  *Record // parsed record, if the content is one
	Raw     []byte  // content as read
	Err     error   // why Record is nil although Raw is not empty
	// Changed is the pidfile's ctime, read after the record (see
	// File.Changed).
	Changed time.Time
	// Holders are the processes holding the lock, as the kernel reports
	// them. Held with no holders means the holder is out of our sight: on
	// another host sharing the filesystem, or in a PID namespace we cannot
	// see into.
	Holders []int
}

// Read reports whether the pidfile in dir exists and is held, with its
// record and the processes that hold the lock, without claiming anything
// (Look, then a look at every process's descriptors when it is held).
//
// A pidfile that this process holds (through another File) is not opened:
// its record is read through the holder's descriptor, and the outcome is
// Held, so that a Read can never close a descriptor of it and drop a POSIX
// lock.
func Read(dir string, opts Options) (*Reading, error) {
	r, err := Look(dir, opts)
	if err != nil || r.Outcome != Held {
		return r, err
	}
	if r.Holders, err = proc.LockHolders(r.Dev, r.Ino); err != nil {
		return nil, err
	}
	return r, nil
}

// Look is Read without naming the holders (Holders stays nil): it opens the
// pidfile, reads its record and tests the lock, which for flock means
// taking and dropping it at once when it is free. A starter that finds the
// lock busy in that instant must retry briefly (interlock.Acquire does); a
// busy lock is only tested, never disturbed. It reads nothing of other
// processes, and not /proc/locks, whose read waits for an RCU grace period
// (milliseconds on an idle machine). A pidfile this process holds is not
// opened, as for Read.
func Look(dir string, opts Options) (*Reading, error) {
	abs, err := CheckDir(dir)
	if err != nil {
		return nil, err
	}
	if err := checkName(abs, opts.name()); err != nil {
		return nil, err
	}
	path := filepath.Join(abs, opts.name())
	r := &Reading{Path: path}
	if h := heldAt(path); h != nil {
		r.Dev, r.Ino = h.dev, h.ino
		r.Record, r.Raw, r.Err = h.readShared()
		if !errors.Is(r.Err, os.ErrClosed) {
			r.Outcome = Held
			return r, nil
		}
		// Released meanwhile: look as at any other pidfile.
		r = &Reading{Path: path}
	}
	const flags = unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	// Read-write where we may: NFS refuses an exclusive lock, even a probe,
	// on a read-only descriptor.
	fd, err := openRetry(path, flags|unix.O_RDWR)
	if err == unix.EACCES || err == unix.EROFS {
		fd, err = openRetry(path, flags|unix.O_RDONLY)
	}
	if err == unix.ENOENT {
		r.Outcome = NotExist
		return r, nil
	}
	if err != nil {
		return nil, openError(path, "pidfile", err)
	}
	f, err := newFile(fd, flags, path, abs, "pidfile")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r.Dev, r.Ino = f.dev, f.ino
	r.Record, r.Raw, r.Err = f.ReadRecord()
	if r.Changed, err = f.Changed(); err != nil {
		return nil, err
	}
	m := opts.Method
	if m == Auto && r.Record != nil && r.Record.LockMethod != Auto {
		m = r.Record.LockMethod
	}
	switch err := f.probe(m); {
	case err == nil:
		r.Outcome = NotHeld
	case errors.Is(err, ErrLocked):
		r.Outcome = Held
	default:
		return nil, err
	}
	return r, nil
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
