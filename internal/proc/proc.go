// Package proc reads the facts dirlockd needs about processes from /proc:
// identity that survives PID reuse (boot ID, namespace, start time), and the
// three kernel witnesses of who still works in a data directory: processes
// holding a lock on the pidfile (fdinfo), processes attached to a SysV segment
// (maps), and processes carrying an acquisition token in their environment.
//
// Every scan is best effort per process: a process that exits or hides its
// entries while it is being read is skipped, because it can no longer hold
// anything. A failure to read /proc itself is an error, because then nothing
// can be proven.
package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Root is where procfs is mounted.
const Root = "/proc"

// BootID returns the kernel's boot ID, which changes on every boot: PIDs and
// SysV segments recorded under another boot ID mean nothing now.
func BootID() (string, error) {
	b, err := readFile(Root + "/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Namespace returns the inode number that identifies the namespace of the
// given kind ("pid", "ipc", "mnt") of process pid.
func Namespace(pid int, kind string) (uint64, error) {
	p := fmt.Sprintf("%s/%d/ns/%s", Root, pid, kind)
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	return st.Ino, nil
}

// StartTime returns the start time of process pid in clock ticks since boot
// (field 22 of /proc/PID/stat). Together with the boot ID and the PID
// namespace it tells a process apart from a later one that reuses its PID.
func StartTime(pid int) (uint64, error) {
	p := fmt.Sprintf("%s/%d/stat", Root, pid)
	b, err := readShown(p)
	if err != nil {
		return 0, err
	}
	return parseStartTime(b, p)
}

func parseStartTime(b []byte, path string) (uint64, error) {
	// The command name (field 2) may contain spaces and parentheses; the
	// fields after it start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: malformed stat line", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	const idx = 22 - 3
	if len(f) <= idx {
		return 0, fmt.Errorf("%s: stat line has %d fields, want at least %d", path, len(f)+2, 22)
	}
	v, err := strconv.ParseUint(f[idx], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: starttime: %w", path, err)
	}
	return v, nil
}

// Alive reports whether a process with this PID exists in our PID namespace
// and, when start is non-zero, has that start time (so a reused PID does not
// count as the process that was recorded).
func Alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, err := StartTime(pid)
	if err != nil {
		return false
	}
	return start == 0 || st == start
}

// Cmdline returns the command line of pid with arguments joined by spaces,
// for messages; it returns "?" when the process cannot be read.
func Cmdline(pid int) string {
	b, err := readFile(fmt.Sprintf("%s/%d/cmdline", Root, pid))
	if err != nil || len(b) == 0 {
		return "?"
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// PIDs lists the processes visible in our PID namespace, in ascending order.
func PIDs() ([]int, error) {
	s, err := newScanner()
	if err != nil {
		return nil, err
	}
	defer s.close()
	return s.pids()
}

// LockHolders returns the processes that hold a lock on the file identified
// by (dev, ino): those with an open descriptor on it whose fdinfo shows a
// "lock:" line. Unlike the PID column of /proc/locks, which names whoever
// placed a flock and never changes, this finds every process that shares the
// locked open file description, such as children that inherited it.
func LockHolders(dev, ino uint64) ([]int, error) {
	id := FileID{dev, ino}
	f, err := Search(Query{Locked: []FileID{id}})
	if err != nil {
		return nil, err
	}
	return f.Holders[id], nil
}

// HoldsLock reports whether process pid holds a lock on the file identified
// by (dev, ino) through one of its descriptors. It reads only that
// process's descriptors: the cheap proof that a recorded holder still holds.
func HoldsLock(pid int, dev, ino uint64) bool {
	if pid <= 0 {
		return false
	}
	s, err := newScanner()
	if err != nil {
		return false
	}
	defer s.close()
	id := FileID{dev, ino}
	return len(s.lockedFiles(pid, map[FileID]bool{id: true})) > 0
}

func hasLockLine(fdinfo []byte) bool {
	for line := range bytes.Lines(fdinfo) {
		if bytes.HasPrefix(line, []byte("lock:")) {
			return true
		}
	}
	return false
}

// Lock is one line of /proc/locks.
type Lock struct {
	Kind string // FLOCK, POSIX, OFDLCK, LEASE, ...
	Type string // READ or WRITE
	PID  int    // placer; -1 for OFD locks; stale for flock
}

// Locks returns the entries of /proc/locks on the file identified by
// (dev, ino). Only locks whose placer is visible from our PID namespace are
// listed by the kernel.
func Locks(dev, ino uint64) ([]Lock, error) {
	b, err := os.ReadFile(Root + "/locks")
	if err != nil {
		return nil, fmt.Errorf("read lock table: %w", err)
	}
	return parseLocks(b, dev, ino), nil
}

func parseLocks(b []byte, dev, ino uint64) []Lock {
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
	var out []Lock
	for line := range bytes.Lines(b) {
		f := strings.Fields(string(line))
		// "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; blocked
		// waiters carry an extra "->" field after the number.
		if len(f) > 1 && f[1] == "->" {
			continue
		}
		if len(f) < 6 || f[5] != want {
			continue
		}
		pid, _ := strconv.Atoi(f[4])
		out = append(out, Lock{Kind: f[1], Type: f[3], PID: pid})
	}
	return out
}

// Attachment is a process attached to a SysV segment.
type Attachment struct {
	PID int
	// Writable says the process maps the segment read-write, as holders
	// and the children that inherit their attachment do.
	Writable bool
	// ReadOnly counts its read-only mappings of the segment (shmat with
	// SHM_RDONLY), which is how dirlockd's analyzers look at one: a
	// process with several analyzers at work has one per analyzer, and
	// each counts in the segment's attach count.
	ReadOnly int
}

// AttachedTo returns the processes in our IPC namespace that have the SysV
// segment shmid mapped. The kernel offers no API for this; the mapping shows
// in /proc/PID/maps as "/SYSV<key>" with the shmid in the inode column.
func AttachedTo(shmid int) ([]Attachment, error) {
	self, err := Namespace(os.Getpid(), "ipc")
	if err != nil {
		return nil, err
	}
	f, err := Search(Query{Segments: []int{shmid}})
	if err != nil {
		return nil, err
	}
	var out []Attachment
	for _, a := range f.Attached[shmid] {
		// shmids repeat across IPC namespaces: only ours count.
		if ns, err := Namespace(a.PID, "ipc"); err == nil && ns == self {
			out = append(out, a)
		}
	}
	return out, nil
}

// mapsSysV reports whether maps has a writable mapping of segment shmid,
// and how many read-only ones.
func mapsSysV(maps []byte, shmid uint64) (writable bool, readOnly int) {
	for line := range bytes.Lines(maps) {
		if !bytes.Contains(line, []byte("/SYSV")) {
			continue
		}
		// address perms offset dev inode path
		f := strings.Fields(string(line))
		if len(f) >= 6 && strings.HasPrefix(f[5], "/SYSV") {
			if ino, err := strconv.ParseUint(f[4], 10, 64); err == nil && ino == shmid {
				if strings.HasPrefix(f[1], "rw") {
					writable = true
				} else {
					readOnly++
				}
			}
		}
	}
	return writable, readOnly
}

// WithEnv returns the processes whose initial environment contains any of
// the given "KEY=VALUE" entries, each with the first of entries it matched.
// A server started by dirlockd carries its acquisition token and pidfile path
// this way even after it has closed every inherited descriptor.
func WithEnv(entries ...string) (map[int]string, error) {
	f, err := Search(Query{Env: entries})
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for i := len(entries) - 1; i >= 0; i-- {
		for _, pid := range f.Env[entries[i]] {
			out[pid] = entries[i]
		}
	}
	return out, nil
}

// OwnFDLocked reports whether the kernel lists a lock held through this
// process's descriptor fd ("lock:" lines in /proc/self/fdinfo/fd). The kernel
// lists there the flock and OFD locks of the descriptor's open file
// description and the POSIX locks this process placed through it, so the
// answer covers every lock method, and reading it opens no descriptor of the
// locked file.
func OwnFDLocked(fd int) (bool, error) {
	b, err := readShown(fmt.Sprintf("%s/self/fdinfo/%d", Root, fd))
	if err != nil {
		return false, err
	}
	return hasLockLine(b), nil
}
