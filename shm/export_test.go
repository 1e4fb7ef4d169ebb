package shm

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Test-only entry points: the package's users reach segments through
// Create, Scan and Segment's methods.

// Attach attaches segment id read-write and checks that its header names
// dir.
func Attach(id int, dir Identity) (*Segment, error) {
	d, err := stat(id)
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

// Analyze classifies segment id for dir. An error means the analysis itself
// failed (an unexpected errno): the caller must not assume the segment is
// unused.
func Analyze(id int, dir Identity) (Analysis, error) {
	return analyze(id, dir, testOwners, false)
}

// Reclaim analyses segment id and, when it is ours and unattached, removes
// it (State Unattached then means "was unattached, now removed").
func Reclaim(id int, dir Identity) (Analysis, error) {
	return analyze(id, dir, testOwners, true)
}

// testOwners trusts the segments the tests make: they run as root.
var testOwners = Owners{0, uint32(os.Geteuid())}
