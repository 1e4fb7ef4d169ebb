package interlock

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/dirlockd/dirlockd/internal/proc"
)

// PinSurvivors pins the survivors an Orphaned report lists, for a caller
// that is to stop them (dirlockd stop of a directory whose holder died),
// and proves each again with facts read after its pidfd pins it: it holds
// the pidfile's lock (the kernel's word), or it runs as the pidfile's owner
// or as root and its environment carries the dead holder's token or this
// pidfile's path, or it is attached to the recorded segment. An environment
// is what a process says of itself, so only processes of a user that could
// have written the record count by it. The caller closes what it gets;
// unproven are the survivors listed that could not be pinned and proven
// (gone, or evidence of another user), which are not to be signalled.
func (r *Report) PinSurvivors() (pinned []*PinnedHolder, unproven []int, err error) {
	var oe *OrphansError
	if r.State != Orphaned || !errors.As(r.Err, &oe) {
		return nil, nil, fmt.Errorf("%s is %s: there are no survivors", r.Dir, r.State)
	}
	me, err := whoami()
	if err != nil {
		return nil, nil, err
	}
	pids := oe.PIDs()
	fds := pinAll(pids)
	// Everything below is read after the pidfds pin the processes.
	env, err := proc.WithEnv(survivorEntries(r.Pidfile, r.Record, me)...)
	if err != nil {
		for _, p := range fds {
			p.Close()
		}
		return nil, nil, err
	}
	var attached []int
	if r.Record != nil && me.sameBoot(r.Record) && r.Record.ShmID >= 0 {
		as, _ := proc.AttachedTo(r.Record.ShmID)
		for _, a := range as {
			attached = append(attached, a.PID)
		}
	}
	for _, pid := range pids {
		p, ok := fds[pid]
		if !ok {
			unproven = append(unproven, pid)
			continue
		}
		proven := proc.HoldsLock(pid, r.PidfileDev, r.PidfileIno)
		if !proven && r.HolderUID != nil {
			_, byEnv := env[pid]
			if uid, ok := effectiveUID(pid); ok && (byEnv || slices.Contains(attached, pid)) {
				proven = uid == *r.HolderUID || uid == 0
			}
		}
		if proven && p.Alive() {
			pinned = append(pinned, pinnedHolder(p))
			continue
		}
		p.Close()
		unproven = append(unproven, pid)
	}
	return pinned, unproven, nil
}

// effectiveUID reads pid's effective uid from /proc/PID/status (the owner
// of /proc/PID is root for a process that made itself non-dumpable).
func effectiveUID(pid int) (uint32, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) < 2 {
				return 0, false
			}
			u, err := strconv.ParseUint(f[1], 10, 32)
			return uint32(u), err == nil
		}
	}
	return 0, false
}
