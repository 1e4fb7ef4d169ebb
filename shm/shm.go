// Package shm keeps the System V shared-memory witness of a data directory.
//
// A holder creates one small segment whose header names the data directory
// (by st_dev and st_ino), the holder, and the acquisition. The kernel counts
// the processes attached to it (shm_nattch): a crashed holder's children that
// were forked without exec stay attached, so a segment of ours with a non-zero
// attach count proves that part of an old process tree is still alive, even
// when the pidfile has been deleted or rewritten. This is PostgreSQL's
// interlock; dirlockd keeps it beside the file lock.
//
// Processes that exec lose their attachment, and segments are invisible
// across IPC namespaces: the segment is one witness of several, never the
// only one.
//
// Keys are derived from the directory's identity, so a new holder finds the
// old segment without the pidfile; they differ from PostgreSQL's (which start
// at st_ino) so that wrapping a PostgreSQL server does not shift its keys.
// Nothing is ever removed unless its header proves it ours and nobody is
// attached.
package shm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
)

// Magic marks a dirlockd segment ("DLOCKSHM" read as little-endian bytes).
const Magic uint64 = 0x4d48534b434f4c44

// LayoutVersion is the header layout this package writes.
const LayoutVersion = 1

// Size is the size of a segment: one page, of which the header uses a
// hundred bytes.
const Size = 4096

// ProbeLimit is how many consecutive keys, from a directory's base key, are
// tried when creating a segment and scanned when looking for old ones.
const ProbeLimit = 128

// shmDest is SHM_DEST, the mode bit of a segment marked for removal; x/sys
// has no constant for it.
const shmDest = 0o1000

// Identity identifies a data directory: its device and inode numbers. A
// directory that is moved keeps it; a copy does not.
type Identity struct {
	Dev, Ino uint64
}

// DirIdentity stats dir.
func DirIdentity(dir string) (Identity, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return Identity{}, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	return Identity{Dev: st.Dev, Ino: st.Ino}, nil
}

// Header is what a segment says about itself.
type Header struct {
	Magic        uint64
	Version      uint32
	CreatorPID   int
	CreatorStart uint64   // creator's start time, clock ticks since boot
	BootID       [16]byte // kernel boot ID at creation
	Dir          Identity
	Created      time.Time
	Token        [16]byte // the acquisition token
}

const headerSize = 88

func (h *Header) encode(b []byte) {
	le := binary.LittleEndian
	le.PutUint32(b[8:], h.Version)
	le.PutUint64(b[16:], uint64(h.CreatorPID))
	le.PutUint64(b[24:], h.CreatorStart)
	copy(b[32:48], h.BootID[:])
	le.PutUint64(b[48:], h.Dir.Dev)
	le.PutUint64(b[56:], h.Dir.Ino)
	le.PutUint64(b[64:], uint64(h.Created.UnixNano()))
	copy(b[72:88], h.Token[:])
	// The magic goes last: a reader that sees it sees a whole header.
	le.PutUint64(b[0:], h.Magic)
}

func decodeHeader(b []byte) Header {
	le := binary.LittleEndian
	var h Header
	h.Magic = le.Uint64(b[0:])
	h.Version = le.Uint32(b[8:])
	h.CreatorPID = int(le.Uint64(b[16:]))
	h.CreatorStart = le.Uint64(b[24:])
	copy(h.BootID[:], b[32:48])
	h.Dir = Identity{Dev: le.Uint64(b[48:]), Ino: le.Uint64(b[56:])}
	h.Created = time.Unix(0, int64(le.Uint64(b[64:])))
	copy(h.Token[:], b[72:88])
	return h
}

// BaseKey returns the first key tried for dir. It is a hash of the
// directory's identity, never IPC_PRIVATE (0), and chosen so that the
// ProbeLimit keys probed from it never reach the first 2*ProbeLimit keys
// above PostgreSQL's first key (the inode's low 32 bits), so the two never
// probe the same keys for the same directory.
func BaseKey(dir Identity) int {
	k := rawKey(dir)
	if k == 0 {
		k = 1
	}
	if pg := uint32(dir.Ino); k-(pg-2*ProbeLimit) < 4*ProbeLimit {
		k = pg + 4*ProbeLimit
		if k == 0 {
			k = 1
		}
	}
	return int(int32(k))
}

// rawKey is the hash BaseKey starts from: FNV-1a of "dirlockd", the device
// and the inode, little-endian.
func rawKey(dir Identity) uint32 {
	h := fnv.New32a()
	var b [24]byte
	copy(b[:8], "dirlockd")
	binary.LittleEndian.PutUint64(b[8:], dir.Dev)
	binary.LittleEndian.PutUint64(b[16:], dir.Ino)
	h.Write(b[:])
	return h.Sum32()
}

// nextKey steps to the next key, wrapping around and skipping IPC_PRIVATE.
func nextKey(k int) int {
	n := uint32(k) + 1
	if n == 0 {
		n = 1
	}
	return int(int32(n))
}

// Segment is an attached segment of ours.
type Segment struct {
	ID  int
	Key int
	mem []byte // the mapping; kept here so it stays reachable while attached
}

// Header returns the segment's header as it is now in memory.
func (s *Segment) Header() Header { return decodeHeader(s.mem) }

// Detach unmaps the segment.
func (s *Segment) Detach() error {
	if s.mem == nil {
		return nil
	}
	err := unix.SysvShmDetach(s.mem)
	s.mem = nil
	if err != nil {
		return fmt.Errorf("shmdt segment %d: %w", s.ID, err)
	}
	return nil
}

// Remove marks the segment for removal; the kernel frees it at the last
// detach. A segment already gone is not an error.
func (s *Segment) Remove() error {
	if _, err := unix.SysvShmCtl(s.ID, unix.IPC_RMID, nil); err != nil && !gone(err) {
		return fmt.Errorf("remove segment %d (key 0x%08x): %w", s.ID, uint32(s.Key), err)
	}
	return nil
}

// MarkedForRemoval reports whether a segment has been removed (IPC_RMID, as
// ipcrm does) while still attached: it lives on, private, until the last
// detach.
func MarkedForRemoval(d *unix.SysvShmDesc) bool { return d.Perm.Mode&shmDest != 0 }

// Stat returns the kernel's view of segment id.
func Stat(id int) (*unix.SysvShmDesc, error) {
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &d); err != nil {
		return nil, fmt.Errorf("shmctl(%d, IPC_STAT): %w", id, err)
	}
	return &d, nil
}

// Attach attaches segment id read-write and checks that its header names
// dir.
func Attach(id int, dir Identity) (*Segment, error) {
	d, err := Stat(id)
	if err != nil {
		return nil, err
	}
	mem, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("shmat(%d): %w", id, err)
	}
	s := &Segment{ID: id, Key: int(d.Perm.Key), mem: mem}
	if why := foreign(mem, dir); why != "" {
		s.Detach()
		return nil, fmt.Errorf("segment %d is not this data directory's: %s", id, why)
	}
	return s, nil
}

func gone(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) || errors.Is(err, unix.ENOENT)
}

// answeredBy maps the errnos that answer an analysis rather than fail it:
// the segment is gone, or it is not ours to read. why is "" for any other
// errno, which the caller must treat as a failure.
func answeredBy(err error) (s State, why string) {
	switch {
	case gone(err):
		return Gone, "gone"
	case errors.Is(err, unix.EACCES):
		return Foreign, "no permission"
	}
	return 0, ""
}

// ErrAttached is wrapped by errors that say a segment of the data directory
// still has processes attached.
var ErrAttached = errors.New("segment still attached")

// AttachedError names a segment of the data directory that still has
// processes attached: survivors of an earlier holder.
type AttachedError struct {
	Analysis
}

func (e *AttachedError) Error() string {
	return fmt.Sprintf("segment %d (key 0x%08x) of this data directory has %d process(es) attached: %v",
		e.ID, uint32(e.Key), e.Nattch, e.PIDs)
}

func (e *AttachedError) Is(target error) bool { return target == ErrAttached }

// Create makes a new segment for dir, attached, with header h (whose Magic,
// Version and Dir it fills in). It probes keys from BaseKey upward: a foreign
// segment makes it move on; an unattached segment of ours, left by a holder
// that crashed, is removed and its key reused; an attached one of ours stops
// it with an *AttachedError.
func Create(dir Identity, h Header) (*Segment, error) {
	h.Magic, h.Version, h.Dir = Magic, LayoutVersion, dir
	key := BaseKey(dir)
	for tries, same := 0, 0; tries < ProbeLimit; {
		id, err := unix.SysvShmGet(key, Size, unix.IPC_CREAT|unix.IPC_EXCL|0o600)
		if err == nil {
			mem, err := unix.SysvShmAttach(id, 0, 0)
			if err != nil {
				unix.SysvShmCtl(id, unix.IPC_RMID, nil)
				return nil, fmt.Errorf("shmat(%d) of new segment: %w", id, err)
			}
			h.encode(mem)
			return &Segment{ID: id, Key: key, mem: mem}, nil
		}
		if err != unix.EEXIST {
			return nil, fmt.Errorf("shmget(0x%08x, IPC_CREAT|IPC_EXCL): %w", uint32(key), err)
		}
		a, err := analyzeKey(key, dir, true)
		if err != nil {
			return nil, err
		}
		switch a.State {
		case Gone, Unattached:
			// Freed under us, or ours and just removed: the key is free.
			if same++; same > 100 {
				return nil, fmt.Errorf("shmget(0x%08x): key keeps being taken", uint32(key))
			}
			continue
		case Foreign:
			key, tries, same = nextKey(key), tries+1, 0
		case Attached:
			return nil, &AttachedError{a}
		}
	}
	return nil, fmt.Errorf("no free SysV key among %d from 0x%08x: too many foreign segments", ProbeLimit, uint32(BaseKey(dir)))
}

// State classifies an existing segment.
type State int

// The states of Analyze.
const (
	Gone       State = iota // no such segment (any more)
	Foreign                 // not this data directory's (or not readable by us)
	Unattached              // ours, and nobody is attached
	Attached                // ours, and processes are attached
)

func (s State) String() string {
	switch s {
	case Gone:
		return "gone"
	case Foreign:
		return "foreign"
	case Unattached:
		return "unattached"
	case Attached:
		return "attached"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Analysis is what Analyze found.
type Analysis struct {
	ID     int
	Key    int
	State  State
	Why    string // for Foreign: what did not match
	Nattch int    // attach count before we looked
	PIDs   []int  // for Attached: processes in our IPC namespace with it mapped
	Header Header // for Unattached and Attached
}

// Analyze classifies segment id for dir. An error means the analysis itself
// failed (an unexpected errno): the caller must not assume the segment is
// unused.
func Analyze(id int, dir Identity) (Analysis, error) {
	return analyze(id, dir, false)
}

// Reclaim analyses segment id and, when it is ours and unattached, removes
// it (State Unattached then means "was unattached, now removed").
func Reclaim(id int, dir Identity) (Analysis, error) {
	return analyze(id, dir, true)
}

func analyzeKey(key int, dir Identity, remove bool) (Analysis, error) {
	id, err := unix.SysvShmGet(key, 0, 0)
	switch {
	case err == unix.ENOENT || err == unix.EIDRM:
		return Analysis{ID: -1, Key: key, State: Gone}, nil
	case err == unix.EACCES:
		return Analysis{ID: -1, Key: key, State: Foreign, Why: "no permission"}, nil
	case err != nil:
		return Analysis{}, fmt.Errorf("shmget(0x%08x): %w", uint32(key), err)
	}
	return analyze(id, dir, remove)
}

func analyze(id int, dir Identity, remove bool) (Analysis, error) {
	a := Analysis{ID: id, Key: -1}
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &d); err != nil {
		if a.State, a.Why = answeredBy(err); a.Why != "" {
			return a, nil
		}
		return a, fmt.Errorf("shmctl(%d, IPC_STAT): %w", id, err)
	}
	a.Key, a.Nattch = int(d.Perm.Key), int(d.Nattch)
	if d.Segsz < headerSize {
		a.State, a.Why = Foreign, fmt.Sprintf("size %d", d.Segsz)
		return a, nil
	}
	mem, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY)
	if err != nil {
		// Gone here means removed between IPC_STAT and shmat.
		if a.State, a.Why = answeredBy(err); a.Why != "" {
			return a, nil
		}
		return a, fmt.Errorf("shmat(%d): %w", id, err)
	}
	defer unix.SysvShmDetach(mem)
	if a.Why = foreign(mem, dir); a.Why != "" {
		a.State = Foreign
		return a, nil
	}
	a.Header = decodeHeader(mem)
	first := a.Nattch
	for try := 0; ; try++ {
		if err := a.count(id, first, &d); err != nil {
			return a, err
		}
		// An attachment out of sight (another IPC or PID namespace)
		// stays; an analyzer that detached between the count and the
		// look at /proc/*/maps is gone on a second look. Look again for
		// a moment before blaming the difference on the unseen.
		if a.Nattch <= len(a.PIDs) || try == unseenRetries {
			break
		}
		first = 0 // from now on only what is attached at the time counts
		time.Sleep(unseenPause)
	}
	if a.Nattch > 0 {
		a.State = Attached
		return a, nil
	}
	a.State = Unattached
	if remove && !MarkedForRemoval(&d) {
		if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil && !gone(err) {
			return a, fmt.Errorf("shmctl(%d, IPC_RMID): %w", id, err)
		}
	}
	return a, nil
}

// How often, and how long apart, analyze looks again at attachments it
// cannot see before counting them as survivors out of sight.
const (
	unseenRetries = 5
	unseenPause   = 2 * time.Millisecond
)

// count sets a.Nattch and a.PIDs from the segment's attach count, taken
// while we are attached ourselves (first is the count before we attached),
// and the processes /proc shows attached to it.
func (a *Analysis) count(id, first int, d *unix.SysvShmDesc) error {
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, d); err != nil {
		return fmt.Errorf("shmctl(%d, IPC_STAT): %w", id, err)
	}
	a.Nattch, a.PIDs = max(first, int(d.Nattch)-1), nil
	if a.Nattch == 0 {
		return nil
	}
	atts, err := proc.AttachedTo(id)
	if err != nil {
		return err
	}
	// A read-only attachment is another analyzer (an Inspect, a starter's
	// scan) reading the header for a moment, never a survivor: holders and
	// their children map the segment read-write. Attachments out of sight
	// still count.
	// Each analyzer's mapping counts in the attach count, ours excepted
	// (taken off above): several may be at work in one process.
	readers := 0
	for _, at := range atts {
		readers += at.ReadOnly
		switch {
		case at.PID == os.Getpid():
			readers = max(readers-1, 0)
		case at.Writable:
			a.PIDs = append(a.PIDs, at.PID)
		}
	}
	a.Nattch = max(a.Nattch-readers, len(a.PIDs))
	return nil
}

// foreign says why mem is not a header of dir's, or "" when it is.
func foreign(mem []byte, dir Identity) string {
	if len(mem) < headerSize {
		return "too small"
	}
	h := decodeHeader(mem)
	switch {
	case h.Magic != Magic:
		return fmt.Sprintf("magic %#x", h.Magic)
	case h.Dir != dir:
		return fmt.Sprintf("names data directory dev %d ino %d", h.Dir.Dev, h.Dir.Ino)
	}
	return ""
}

// Scan looks for segments of dir: at every key Create could have used, and
// at the given ids (those an old record names). It returns the analyses of
// segments that are dir's; with remove set, the unattached ones are removed.
// Any analysis failure stops it with an error.
func Scan(dir Identity, remove bool, ids ...int) ([]Analysis, error) {
	var out []Analysis
	seen := map[int]bool{}
	add := func(a Analysis) {
		if (a.State == Attached || a.State == Unattached) && !seen[a.ID] {
			seen[a.ID] = true
			out = append(out, a)
		}
	}
	for _, id := range ids {
		if id < 0 {
			continue
		}
		a, err := analyze(id, dir, remove)
		if err != nil {
			return out, err
		}
		add(a)
	}
	key := BaseKey(dir)
	for range ProbeLimit {
		a, err := analyzeKey(key, dir, remove)
		if err != nil {
			return out, err
		}
		add(a)
		key = nextKey(key)
	}
	return out, nil
}
