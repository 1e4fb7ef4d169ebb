package pidfile

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
)

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
	// DirDev and DirIno identify the data directory, and Filesystem is
	// the filesystem it is on, all from the descriptor Look opened it as.
	DirDev, DirIno uint64
	Filesystem     Filesystem
	// Owner is the pidfile's owner: the uid its holders run as (a
	// holder writes only a pidfile of its own). DirOwner is the data
	// directory's owner.
	Owner, DirOwner uint32
	Record          *Record // parsed record, if the content is one
	Raw             []byte  // content as read
	Err             error   // why Record is nil although Raw is not empty
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
	d, path, err := openPidfileDir(dir, ForLook, opts)
	if err != nil {
		return nil, err
	}
	defer d.close()
	owner := d.owner()
	fs, err := statFD(d.fd, d.abs)
	if err != nil {
		return nil, err
	}
	r := &Reading{Path: path, DirOwner: owner, DirDev: d.st.Dev, DirIno: d.st.Ino, Filesystem: fs}
	if h := heldAt(path); h != nil {
		r.Dev, r.Ino, r.Owner, r.DirOwner = h.dev, h.ino, h.uid, owner
		r.Record, r.Raw, r.Err = h.readShared()
		if !errors.Is(r.Err, os.ErrClosed) {
			r.Outcome = Held
			return r, nil
		}
		// Released meanwhile: look as at any other pidfile.
		r = &Reading{Path: path, DirOwner: owner, DirDev: d.st.Dev, DirIno: d.st.Ino, Filesystem: fs}
	}
	const flags = unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	// Read-write where we may: NFS refuses an exclusive lock, even a probe,
	// on a read-only descriptor.
	fd, err := openIn(d, opts.name(), flags|unix.O_RDWR)
	if err == unix.EACCES || err == unix.EROFS {
		fd, err = openIn(d, opts.name(), flags|unix.O_RDONLY)
	}
	if err == unix.ENOENT {
		r.Outcome = NotExist
		return r, nil
	}
	if err != nil {
		return nil, openError(path, "pidfile", err)
	}
	f, err := newFile(fd, flags, path, d, "pidfile", ForLook)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r.Dev, r.Ino, r.Owner, r.DirOwner = f.dev, f.ino, f.uid, owner
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
