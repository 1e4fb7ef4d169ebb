package pidfile

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
)

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
	if f.dirDirty && durable && !f.noSync {
		if err := syncDir(f.dir); err != nil {
			return fmt.Errorf("write pidfile: %w", err)
		}
	}
	if durable {
		f.dirDirty = false
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
