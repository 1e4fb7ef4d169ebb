package shm

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
)

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

// State classifies an existing segment.
type State int

// The states of an analysis.
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

// Analysis is what Scan found of one segment.
type Analysis struct {
	ID    int
	Key   int
	State State
	Why   string // for Foreign: what did not match
	// Owner and Creator are the segment's owner and creator uids, as
	// the kernel records them (when it could be read).
	Owner, Creator uint32
	Nattch         int    // attach count before we looked
	PIDs           []int  // for Attached: processes in our IPC namespace with it mapped
	Header         Header // for Unattached and Attached
}

func analyzeKey(key int, dir Identity, owners Owners, remove bool) (Analysis, error) {
	id, err := unix.SysvShmGet(key, 0, 0)
	switch {
	case err == unix.ENOENT || err == unix.EIDRM:
		return Analysis{ID: -1, Key: key, State: Gone}, nil
	case err == unix.EACCES:
		return Analysis{ID: -1, Key: key, State: Foreign, Why: "no permission"}, nil
	case err != nil:
		return Analysis{}, fmt.Errorf("shmget(0x%08x): %w", uint32(key), err)
	}
	return analyze(id, dir, owners, remove)
}

// analyze says whether segment id is one of dir's, and who is attached.
// A segment not made by owners is Foreign before anything else is read of
// it: whatever its header says, it is neither counted nor removed.
func analyze(id int, dir Identity, owners Owners, remove bool) (Analysis, error) {
	a := Analysis{ID: id, Key: -1}
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &d); err != nil {
		if a.State, a.Why = answeredBy(err); a.Why != "" {
			return a, nil
		}
		return a, fmt.Errorf("shmctl(%d, IPC_STAT): %w", id, err)
	}
	a.Key, a.Nattch = int(d.Perm.Key), int(d.Nattch)
	a.Owner, a.Creator = d.Perm.Uid, d.Perm.Cuid
	if why := owners.foreignOwner(d.Perm.Uid, d.Perm.Cuid); why != "" {
		a.State, a.Why = Foreign, why
		return a, nil
	}
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
	if remove && !markedForRemoval(&d) {
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

// Scan looks for segments of dir made by owners: every segment of our IPC
// namespace that the kernel lists (/proc/sysvipc/shm) as created and owned
// by owners and big enough for a header, at any key, and the given ids
// (those an old record names). It returns the analyses of segments that
// are dir's; with remove set, the unattached ones are removed. Any analysis
// failure stops it with an error.
func Scan(dir Identity, owners Owners, remove bool, ids ...int) ([]Analysis, error) {
	var out []Analysis
	seen := map[int]bool{}
	look := func(id int) error {
		if id < 0 || seen[id] {
			return nil
		}
		seen[id] = true
		a, err := analyze(id, dir, owners, remove)
		if err == nil && (a.State == Attached || a.State == Unattached) {
			out = append(out, a)
		}
		return err
	}
	for _, id := range ids {
		if err := look(id); err != nil {
			return out, err
		}
	}
	segs, err := list()
	if err != nil {
		return out, err
	}
	for _, l := range segs {
		if l.size < headerSize || !owners.Trusts(l.uid, l.cuid) {
			continue
		}
		if err := look(l.id); err != nil {
			return out, err
		}
	}
	return out, nil
}
