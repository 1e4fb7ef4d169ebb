package interlock

import (
	"fmt"
	"maps"
	"slices"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// witness looks for survivors of the holder that wrote rec (which may be nil:
// a missing or corrupt record hides nothing from the segment scan). With
// reclaim set it removes the unattached segments it finds. found is a pass
// over /proc that already looked for survivorEntries (nil: witness makes its
// own). It returns the segments of the directory it found, and an
// *OrphansError when anybody is left.
func witness(dir, path string, dirID shm.Identity, rec *pidfile.Record, me self, reclaim bool, found *proc.Found) ([]shm.Analysis, error) {
	var ids []int
	if me.sameBoot(rec) {
		ids = append(ids, rec.ShmID)
	}
	segs, err := shm.Scan(dirID, reclaim, ids...)
	if err != nil {
		return nil, fmt.Errorf("analyse shared memory of %s (refusing to guess): %w", dir, err)
	}
	var orphans []Orphan
	for _, a := range segs {
		if a.State == shm.Attached {
			orphans = append(orphans, segmentOrphans(a)...)
		}
	}
	envs := survivorEntries(path, rec, me)
	if found == nil {
		if found, err = proc.Search(proc.Query{Env: envs}); err != nil {
			return segs, err
		}
	}
	witnesses := map[int]Witness{}
	for i, e := range envs {
		for _, pid := range found.Env[e] {
			witnesses[pid] = WitnessStarted
			if i > 0 { // the token names the holder: the stronger witness
				witnesses[pid] = WitnessToken
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
		return segs, &OrphansError{Dir: dir, Previous: rec, Orphans: orphans}
	}
	return segs, nil
}

// survivorEntries are the environment entries that mark a survivor of the
// holder that wrote rec: this pidfile's path in DIRLOCKD_PIDFILE, and, for
// a record of this boot, its token. The token, when there is one, comes
// last.
func survivorEntries(path string, rec *pidfile.Record, me self) []string {
	envs := []string{PidfileEnv + "=" + path}
	if me.sameBoot(rec) && rec.Token != "" {
		envs = append(envs, TokenEnv+"="+rec.Token)
	}
	return envs
}

func segmentOrphans(a shm.Analysis) []Orphan {
	o := orphansOf(a.PIDs, WitnessSegment)
	for range a.Nattch - len(a.PIDs) {
		o = append(o, Orphan{Witness: WitnessSegment})
	}
	return o
}
