package proc

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
)

// Stat is what /proc/PID/stat says about a process's place in the tree.
type Stat struct {
	State byte   // R, S, D, Z, T, ...
	PPID  int    // parent, in our PID namespace (0 outside it)
	PGID  int    // process group
	Start uint64 // start time in clock ticks since boot
}

// ReadStat reads pid's parent, process group, state and start time.
func ReadStat(pid int) (Stat, error) {
	p := fmt.Sprintf("%s/%d/stat", Root, pid)
	b, err := readFile(p)
	if err != nil {
		return Stat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("%s: malformed stat line", p)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), f[1] field 4 (ppid), f[2] field 5 (pgrp).
	if len(f) < 3 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("%s: malformed stat line", p)
	}
	s := Stat{State: f[0][0]}
	if s.PPID, err = strconv.Atoi(f[1]); err != nil {
		return Stat{}, fmt.Errorf("%s: ppid: %w", p, err)
	}
	if s.PGID, err = strconv.Atoi(f[2]); err != nil {
		return Stat{}, fmt.Errorf("%s: pgrp: %w", p, err)
	}
	if s.Start, err = parseStartTime(b, p); err != nil {
		return Stat{}, err
	}
	return s, nil
}

// Children returns the children of every thread of pid, as
// /proc/PID/task/TID/children lists them. A process that is gone has none.
func Children(pid int) []int {
	dir := fmt.Sprintf("%s/%d/task", Root, pid)
	fd, err := eintr.Openat(unix.AT_FDCWD, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	tids, err := listNumeric(fd, make([]byte, 4096), dir, 1)
	unix.Close(fd)
	if err != nil {
		return nil
	}
	var out []int
	for _, tid := range tids {
		b, err := readFile(fmt.Sprintf("%s/%d/children", dir, tid))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// DescendsFrom reports whether pid is a descendant of ancestor, following
// parent links in /proc. A process that exits on the way is not one.
func DescendsFrom(pid, ancestor int) bool {
	for range 1 << 16 { // parent links cannot loop, but bound the walk anyway
		s, err := ReadStat(pid)
		if err != nil || s.PPID <= 0 {
			return false
		}
		if s.PPID == ancestor {
			return true
		}
		pid = s.PPID
	}
	return false
}
