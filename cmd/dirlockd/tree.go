package main

import (
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
)

// The server's tree is every process that descends from dirlockd run.
// dirlockd makes itself a child subreaper (PR_SET_CHILD_SUBREAPER), so a
// descendant whose parent exits is reparented to dirlockd rather than to
// init: a server that forks and exits, or daemonizes with setsid and a
// double fork, stays in the tree. The tree is therefore empty exactly when
// dirlockd has no child left, which is what wait4 reports with ECHILD, and
// nothing else can join it once it is empty. The children of dirlockd that
// are not of the tree are the helpers of run --etcd, the fence process
// (fence.go) and the etcd agent (runlease.go): every listing of the tree
// leaves them out, and they are told to exit once they are dirlockd's only
// children, so that ECHILD still comes when the tree is gone.
//
// Processes of the tree are signalled only through pidfds opened while they
// were provably in it, never by a bare PID that might have been recycled.

// becomeSubreaper makes the calling process the reaper of its orphaned
// descendants.
func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// hasChildren reports whether dirlockd has a child, and so whether the tree
// may not be empty, without reaping anything: one system call where listing
// the tree takes a read per thread. The fence, when there is one, counts as
// a child: only a listing (pinTree) tells whether the tree is empty then.
func hasChildren() bool {
	var info unix.Siginfo
	return unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WSTOPPED|unix.WCONTINUED|unix.WNOHANG|unix.WNOWAIT, nil) != unix.ECHILD
}

// member is a process of the tree, pinned by a pidfd.
type member struct {
	pid, parent, pgid int
	pfd               int
}

// pinned is a snapshot of the tree, parents before their children. Close
// releases its pidfds.
type pinned []member

// pinTree lists the live processes of the tree and pins each with a pidfd.
// A process counts only if, once pinned, its parent is still the process
// under which it was listed, and that parent is still alive: a PID that was
// recycled in between is never taken for a member. except are children of
// ours that are not of the server's tree (the fence and the etcd agent of
// run --etcd).
func pinTree(except ...int) pinned {
	return pinBelow(member{pid: os.Getpid(), pfd: -1}, except...)
}

// pinBelow lists and pins the live descendants of root, which is pinned by
// root.pfd (-1: the calling process itself), leaving out except.
func pinBelow(root member, except ...int) pinned {
	var out pinned
	parents := []member{root}
	for len(parents) > 0 {
		p := parents[0]
		parents = parents[1:]
		var kids pinned
		for _, pid := range proc.Children(p.pid) {
			if slices.Contains(except, pid) {
				continue
			}
			if m, ok := pin(pid, p.pid); ok {
				kids = append(kids, m)
			}
		}
		// A dead parent's PID may have been reused by another process
		// whose children we just listed: drop them. Its real children
		// were reparented to us, and are found under us next time.
		if p.pfd >= 0 && unix.PidfdSendSignal(p.pfd, 0, nil, 0) != nil {
			kids.Close()
			continue
		}
		out = append(out, kids...)
		parents = append(parents, kids...)
	}
	return out
}

// pin opens a pidfd on pid and keeps it if pid is, after that, a live
// (not zombie) child of parent.
func pin(pid, parent int) (member, bool) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return member{}, false
	}
	s, err := proc.ReadStat(pid)
	if err != nil || s.PPID != parent || s.State == 'Z' {
		unix.Close(pfd)
		return member{}, false
	}
	return member{pid: pid, parent: parent, pgid: s.PGID, pfd: pfd}, true
}

// pinChild pins pid, a child of ours that we have not reaped yet: the
// command run has just started. Its PID cannot be recycled before we reap
// it, so no parent check is needed, and unlike pin it takes a child that has
// already exited (a zombie): a command that fails at once must still be
// handled as the main process when reapAll brings its exit. Its process
// group is its own (run starts it with Setpgid).
func pinChild(pid int) (member, bool) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return member{}, false
	}
	return member{pid: pid, parent: os.Getpid(), pgid: pid, pfd: pfd}, true
}

// pinMain pins pid as the tree's main process if it is a live descendant of
// dirlockd.
func pinMain(pid int) (member, bool) {
	s, err := proc.ReadStat(pid)
	if err != nil {
		return member{}, false
	}
	m, ok := pin(pid, s.PPID)
	if !ok {
		return member{}, false
	}
	self := os.Getpid()
	if s.PPID != self && !proc.DescendsFrom(s.PPID, self) {
		unix.Close(m.pfd)
		return member{}, false
	}
	return m, true
}

// Close releases the pidfds.
func (t pinned) Close() {
	for _, m := range t {
		unix.Close(m.pfd)
	}
}

// PIDs returns the members' PIDs, ascending.
func (t pinned) PIDs() []int {
	pids := make([]int, len(t))
	for i, m := range t {
		pids[i] = m.pid
	}
	slices.Sort(pids)
	return pids
}

// Without returns the members that are neither pid nor descended from it.
func (t pinned) Without(pid int) pinned {
	out := pinned{}
	gone := map[int]bool{pid: true}
	for _, m := range t { // parents come first
		if gone[m.pid] || gone[m.parent] {
			gone[m.pid] = true
			continue
		}
		out = append(out, m)
	}
	return out
}

// Signal sends sig to every member; it returns how many got it (a member
// that has exited since it was pinned does not).
func (t pinned) Signal(sig unix.Signal) int {
	n := 0
	for _, m := range t {
		if unix.PidfdSendSignal(m.pfd, sig, nil, 0) == nil {
			n++
		}
	}
	return n
}
