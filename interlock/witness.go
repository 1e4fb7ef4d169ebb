package interlock

import (
	"fmt"
	"maps"
	"slices"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// place is a data directory as the witnesses look for it: its path, its
// pidfile's, the identity that segment headers name, and the users whose
// processes and segments may witness it.
type place struct {
	dir, path string
	id        shm.Identity
	// owners are root, the directory's owner, and the uid the holder
	// runs as (the pidfile's owner). Only what the kernel says one of
	// them made is evidence: any other local user can create a segment
	// with a copy of our header, or start a process with our variables
	// in its environment.
	owners shm.Owners
}

func newPlace(dir, path string, id shm.Identity, dirOwner, holder uint32) place {
	return place{dir: dir, path: path, id: id, owners: shm.Owners{0, dirOwner, holder}}
}

// witness looks for survivors of the holder that wrote rec (which may be nil:
// a missing or corrupt record hides nothing from the segment scan). With
// reclaim set it removes the unattached segments it finds. found is a pass
// over /proc that already looked for survivorEntries (nil: witness makes its
// own). It returns the segments of the directory it found, and an
// *OrphansError when anybody is left.
func witness(p place, rec *pidfile.Record, me self, reclaim bool, found *proc.Found) ([]shm.Analysis, error) {
	var ids []int
	if me.sameBoot(rec) {
		ids = append(ids, rec.ShmID)
	}
	segs, err := shm.Scan(p.id, p.owners, reclaim, ids...)
	if err != nil {
		return nil, fmt.Errorf("analyse shared memory of %s (refusing to guess): %w", p.dir, err)
	}
	var orphans []Orphan
	for _, a := range segs {
		if a.State == shm.Attached {
			orphans = append(orphans, segmentOrphans(a)...)
		}
	}
	envs := survivorEntries(p.path, rec, me)
	if found == nil {
		if found, err = proc.Search(proc.Query{Env: envs}); err != nil {
			return segs, err
		}
	}
	witnesses := map[int]Witness{}
	for _, e := range envs { // the token last: the stronger witness
		for _, pid := range found.Env[e] {
			if w, ok := p.envWitness(e, pid, found); ok {
				witnesses[pid] = w
			}
		}
	}
	for _, pid := range slices.Sorted(maps.Keys(witnesses)) {
		if pid == me.pid {
			continue
		}
		orphans = append(orphans, Orphan{PID: pid, Cmdline: proc.Cmdline(pid), Witness: witnesses[pid]})
	}
	if len(orphans) > 0 {
		return segs, &OrphansError{Dir: p.dir, Previous: rec, Orphans: orphans}
	}
	return segs, nil
}

// survivorEntries are the environment entries that mark a survivor of the
// holder that wrote rec: this pidfile's path in DIRLOCKD_PIDFILE, and, for
// a record of this boot, its token. The token, when there is one, comes
// last. envWitness decides which carriers count.
func survivorEntries(path string, rec *pidfile.Record, me self) []string {
	envs := []string{PidfileEnv + "=" + path}
	if me.sameBoot(rec) && rec.Token != "" {
		envs = append(envs, TokenEnv+"="+rec.Token)
	}
	return envs
}

// envWitness says whether process pid, found carrying entry e, is a
// survivor, and which witness found it. The token is a 128-bit secret kept
// in a pidfile of mode 0600 and in the environments of the holder's
// processes, which only their users and root can read: a process carrying
// the record's token descends from the holder, whatever user it became (a
// server may drop privileges). The pidfile's path is no secret: any user
// can put it in an environment, so a process carrying it without the
// record's token counts only when the kernel says the directory's users
// made it: its real and effective uids are among owners. Those users it
// still counts, whatever token it carries: a record can be older than the
// last holder (a pidfile restored from a backup), and the directory's own
// users can block it in plainer ways anyway.
func (p place) envWitness(e string, pid int, found *proc.Found) (Witness, bool) {
	if e != PidfileEnv+"="+p.path {
		return WitnessToken, true
	}
	c, ok := found.Creds[pid]
	if !ok {
		return WitnessStarted, false // gone before its uids were read
	}
	return WitnessStarted, p.owners.Trusts(c.Effective, c.Real)
}

func segmentOrphans(a shm.Analysis) []Orphan {
	o := orphansOf(a.PIDs, WitnessSegment)
	for range a.Nattch - len(a.PIDs) {
		o = append(o, Orphan{Witness: WitnessSegment})
	}
	return o
}
