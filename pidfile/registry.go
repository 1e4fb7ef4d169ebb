package pidfile

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// The pidfiles this process holds locked, by inode.
//
// This is process-global state because the kernel makes the lock's safety
// process-global: a POSIX lock belongs to the process, not to a descriptor,
// and closing ANY descriptor of the file in the process drops it, silently.
// An Inspect, a second Acquire or a plain Read of a directory the process
// holds would each open the pidfile and close it again, and the holder would
// lose its lock without noticing. (POSIX locks of one process do not conflict
// with each other either, so two Files of one inode would both "win".) So:
//
//   - Open and Read look the path up here with stat(2), which opens nothing,
//     before they open it: a pidfile this process holds is answered through
//     the holder's own descriptor (Read) or refused (Open, *LockedHereError).
//   - TryLock refuses an inode another File of this process holds.
//   - A descriptor of a held inode that was opened anyway (the path was
//     swapped to the held inode between the lookup and the open) is never
//     closed while the lock is held: it is parked on the holder and closed
//     with it.
//
// The registry lives here rather than in interlock because descriptors are
// this package's business: it makes every entry point that opens the file
// (Open, Read, Look) safe, whoever calls it. The rule is applied to every
// method, not only POSIX: a second holder of one directory in one process is
// a caller's bug whatever the lock.
var held = struct {
	sync.Mutex
	files map[fileID]*File
}{files: map[fileID]*File{}}

type fileID struct{ dev, ino uint64 }

// LockedHereError says that the pidfile is already locked by this very
// process, through another File (another interlock.Lock). It matches
// ErrLocked. Record is the record read through the holder's descriptor.
type LockedHereError struct {
	Path   string
	PID    int
	Record *Record
}

func (e *LockedHereError) Error() string {
	return fmt.Sprintf("%s: %s: this process (PID %d) already holds it; "+
		"open it once per process, and keep the File (or interlock.Lock) that holds it", ErrLocked, e.Path, e.PID)
}

func (e *LockedHereError) Is(target error) bool { return target == ErrLocked }

// heldAt returns the File of this process that holds the pidfile at path
// locked, or nil. It stats the path, which opens no descriptor.
//
// A process that holds no pidfile (the common case: a start, a check) has
// nothing to look up, and skips the stat. A File registered after that
// test and before the open is caught by TryLock (register) and, for a
// descriptor opened anyway, by closeFile's parking.
func heldAt(path string) *File {
	held.Lock()
	none := len(held.files) == 0
	held.Unlock()
	if none {
		return nil
	}
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return nil
	}
	held.Lock()
	defer held.Unlock()
	return held.files[fileID{st.Dev, st.Ino}]
}

// lockedHere is the refusal to open or lock a pidfile that h holds.
func (h *File) lockedHere(path string) *LockedHereError {
	rec, _, _ := h.readShared()
	return &LockedHereError{Path: path, PID: os.Getpid(), Record: rec}
}

// readShared reads h's record through its descriptor on behalf of another
// caller. It uses no lazily filled field of h, which its owner may be
// filling concurrently.
func (h *File) readShared() (*Record, []byte, error) {
	if fs, err := StatFS(h.dir); err == nil && fs.Shared() {
		unix.Fadvise(int(h.f.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
	return readRecord(h.f, h.path)
}

// register records that f now holds the lock; it fails if another File of
// this process holds the same inode. place runs under the registry's lock so
// that two Files of one inode cannot both take it.
func (f *File) register(place func() error) error {
	id := fileID{f.dev, f.ino}
	held.Lock()
	if h := held.files[id]; h != nil && h != f {
		held.Unlock()
		return h.lockedHere(f.path)
	}
	err := place()
	if err == nil {
		held.files[id] = f
	}
	held.Unlock()
	return err
}

// unregister forgets f as a holder; its parked descriptors stay parked until
// Close.
func (f *File) unregister() {
	held.Lock()
	defer held.Unlock()
	if id := (fileID{f.dev, f.ino}); held.files[id] == f {
		delete(held.files, id)
	}
}

// closeFile closes of, a descriptor of the inode (dev, ino) opened by owner
// (nil for a bare descriptor). If owner holds the inode, it is forgotten and
// its parked descriptors are closed too. If another File of this process
// holds it, of is parked on that holder instead, and closed with it: the
// close would drop the holder's POSIX lock.
func closeFile(of *os.File, dev, ino uint64, owner *File) error {
	id := fileID{dev, ino}
	held.Lock()
	defer held.Unlock()
	switch h := held.files[id]; {
	case h != nil && h == owner:
		delete(held.files, id)
		for _, p := range h.parked {
			p.Close()
		}
		h.parked = nil
	case h != nil:
		h.parked = append(h.parked, of)
		return nil
	}
	return of.Close()
}
