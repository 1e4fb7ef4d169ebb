package proc

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
)

// A Pinned is a process pinned by a pidfd: a signal sent through it reaches
// that process or, once it is gone, nobody, even if its PID is reused
// meanwhile. Parent and PGID are what /proc said when it was pinned (0 when
// not known).
type Pinned struct {
	PID, Parent, PGID int
	fd                int // -1: the calling process itself, or nothing pinned
}

// Open pins pid with a pidfd and nothing more: the caller proves, with facts
// read after it, that the process is the one it means (see Pin).
func Open(pid int) (Pinned, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return Pinned{PID: pid, fd: -1}, fmt.Errorf("pidfd_open(%d): %w", pid, err)
	}
	return Pinned{PID: pid, fd: fd}, nil
}

// Adopt makes a Pinned of a pidfd opened elsewhere (received over a socket).
func Adopt(pid, fd int) Pinned { return Pinned{PID: pid, fd: fd} }

// Self is the calling process, as the root of its tree: it has no pidfd.
func Self() Pinned { return Pinned{PID: os.Getpid(), fd: -1} }

// Pin opens a pidfd on pid and keeps it if pid is, after that, a live
// (not zombie) child of parent.
func Pin(pid, parent int) (Pinned, bool) {
	p, err := Open(pid)
	if err != nil {
		return Pinned{}, false
	}
	s, err := ReadStat(pid)
	if err != nil || s.PPID != parent || s.State == 'Z' {
		p.Close()
		return Pinned{}, false
	}
	p.Parent, p.PGID = parent, s.PGID
	return p, true
}

// PinChild pins pid, a child of ours that we have not reaped yet. Its PID
// cannot be recycled before we reap it, so no parent check is needed, and
// unlike Pin it takes a child that has already exited (a zombie). pgid is
// the process group it was started in.
func PinChild(pid, pgid int) (Pinned, bool) {
	p, err := Open(pid)
	if err != nil {
		return Pinned{}, false
	}
	p.Parent, p.PGID = os.Getpid(), pgid
	return p, true
}

// PinDescendant pins pid if it is a live descendant of ancestor.
func PinDescendant(pid, ancestor int) (Pinned, bool) {
	s, err := ReadStat(pid)
	if err != nil {
		return Pinned{}, false
	}
	p, ok := Pin(pid, s.PPID)
	if !ok {
		return Pinned{}, false
	}
	if s.PPID != ancestor && !DescendsFrom(s.PPID, ancestor) {
		p.Close()
		return Pinned{}, false
	}
	return p, true
}

// FD is the pidfd, -1 for none.
func (p Pinned) FD() int { return p.fd }

// Valid reports whether p holds a pidfd.
func (p Pinned) Valid() bool { return p.fd >= 0 }

// Signal sends sig through the pidfd.
func (p Pinned) Signal(sig unix.Signal) error {
	if p.fd < 0 {
		return fmt.Errorf("signal PID %d: not pinned", p.PID)
	}
	if err := unix.PidfdSendSignal(p.fd, sig, nil, 0); err != nil {
		return fmt.Errorf("signal PID %d: %w", p.PID, err)
	}
	return nil
}

// Alive reports whether the pinned process has not yet exited (a zombie
// counts as alive until it is reaped). The calling process, Self, is.
func (p Pinned) Alive() bool {
	return p.fd < 0 && p.PID == os.Getpid() || p.fd >= 0 && unix.PidfdSendSignal(p.fd, 0, nil, 0) == nil
}

// Exited reports, without reaping it, whether the pinned process has exited.
func (p Pinned) Exited() bool {
	var info unix.Siginfo
	return p.fd >= 0 && unix.Waitid(unix.P_PIDFD, p.fd, &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil) == nil && info.Signo != 0
}

// WaitExit waits until the pinned process has exited, or timeout has passed
// (a negative timeout: for ever), and reports whether it has exited. It
// reaps nothing.
func (p Pinned) WaitExit(timeout time.Duration) bool {
	if p.fd < 0 {
		return false
	}
	ms := -1
	if timeout >= 0 {
		ms = int(timeout.Milliseconds())
	}
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	var n int
	err := eintr.Retry(func() (err error) { n, err = unix.Poll(fds, ms); return err })
	return err == nil && n > 0
}

// Reap reaps the pinned process, a child of ours, if it has exited and no
// one has reaped it yet.
func (p Pinned) Reap() {
	var info unix.Siginfo
	if p.fd >= 0 {
		unix.Waitid(unix.P_PIDFD, p.fd, &info, unix.WEXITED|unix.WNOHANG, nil)
	}
}

// Dup returns a second handle on the same process, to be closed apart.
func (p Pinned) Dup() (Pinned, error) {
	fd, err := unix.Dup(p.fd)
	if err != nil {
		return Pinned{}, fmt.Errorf("dup the pidfd of PID %d: %w", p.PID, err)
	}
	p.fd = fd
	return p, nil
}

// Close releases the pidfd.
func (p Pinned) Close() error {
	if p.fd < 0 {
		return nil
	}
	return unix.Close(p.fd)
}

// A Tree is a snapshot of a process tree, parents before their children,
// each process pinned. Close releases its pidfds.
type Tree []Pinned

// PinBelow lists and pins the live descendants of root, leaving out the
// processes except and their descendants. A process counts only if, once
// pinned, its parent is still the process under which it was listed, and
// that parent is still alive: a PID that was recycled in between is never
// taken for a member.
func PinBelow(root Pinned, except ...int) Tree {
	var out Tree
	parents := []Pinned{root}
	for len(parents) > 0 {
		p := parents[0]
		parents = parents[1:]
		var kids Tree
		for _, pid := range Children(p.PID) {
			if slices.Contains(except, pid) {
				continue
			}
			if m, ok := Pin(pid, p.PID); ok {
				kids = append(kids, m)
			}
		}
		// A dead parent's PID may have been reused by another process
		// whose children we just listed: drop them. Its real children
		// were reparented to a reaper, and are found under it.
		if p.fd >= 0 && !p.Alive() {
			kids.Close()
			continue
		}
		out = append(out, kids...)
		parents = append(parents, kids...)
	}
	return out
}

// Close releases the pidfds.
func (t Tree) Close() {
	for _, m := range t {
		m.Close()
	}
}

// PIDs returns the members' PIDs, ascending.
func (t Tree) PIDs() []int {
	pids := make([]int, len(t))
	for i, m := range t {
		pids[i] = m.PID
	}
	slices.Sort(pids)
	return pids
}

// Without returns the members that are neither pid nor descended from it.
func (t Tree) Without(pid int) Tree {
	out := Tree{}
	gone := map[int]bool{pid: true}
	for _, m := range t { // parents come first
		if gone[m.PID] || gone[m.Parent] {
			gone[m.PID] = true
			continue
		}
		out = append(out, m)
	}
	return out
}

// Signal sends sig to every member; it returns how many got it (a member
// that has exited since it was pinned does not).
func (t Tree) Signal(sig unix.Signal) int {
	n := 0
	for _, m := range t {
		if m.Signal(sig) == nil {
			n++
		}
	}
	return n
}

// BecomeSubreaper makes the calling process the reaper of its orphaned
// descendants (PR_SET_CHILD_SUBREAPER).
func BecomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// HasChildren reports whether the calling process has a child, without
// reaping anything: one system call where listing a tree takes a read per
// thread.
func HasChildren() bool {
	var info unix.Siginfo
	return unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WSTOPPED|unix.WCONTINUED|unix.WNOHANG|unix.WNOWAIT, nil) != unix.ECHILD
}

// Describe says how a process ended: its exit status or its signal.
func Describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return unix.SignalName(ws.Signal())
	}
	return strconv.Itoa(ws.ExitStatus())
}
