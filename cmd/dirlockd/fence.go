package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/lease/agent"
)

// The fence keeps the lease's rule when dirlockd cannot: if dirlockd is
// stopped (SIGSTOP, a stuck wrapper) or killed, nobody renews the lease, and
// the server's tree must still be dead before the lease can end. The fence
// is a small process of its own ("dirlockd fence", started by run --etcd
// before the server) that dirlockd feeds, over a socket, with each new kill
// time and pidfds of every process of the tree. If no newer kill time comes
// in time, it walks the tree from those pidfds (and from dirlockd, when
// dirlockd is still its parent) and SIGKILLs all of it. dirlockd says "bye"
// once the tree is gone; a socket that closes without "bye" means dirlockd
// died, and the fence kills at the last kill time it was told.
//
// The fence is dirlockd's child, so dirlockd, the subreaper, reaps it like a
// process of the tree: run leaves it out of the tree (pinTree's except),
// counts the tree gone when the fence is its only child left, and then says
// bye. It holds none of the interlock's witnesses: no pidfile descriptor, no
// segment, no token in its environment.
//
// Kill times travel as CLOCK_BOOTTIME nanoseconds (agent.Now), which,
// unlike Go's monotonic clock, go on while the host is suspended, as etcd's
// clock does.

// fenceCommand is the hidden command of the fence process; it is not in
// the command table: users never run it.
const fenceCommand = "fence"

// fenceMaxFDs bounds the pidfds of one message (the kernel's SCM_MAX_FD is
// 253).
const fenceMaxFDs = 200

// fence is run's side of the fence process.
type fence struct {
	pid  int
	sock int // our end, non-blocking: a stuck fence never blocks run
	warn bool
}

// startFence starts the fence with its first kill time (on agent.Now's
// clock).
func startFence(killAt time.Duration) (*fence, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fence socket: %w", err)
	}
	defer unix.Close(fds[1])
	self, err := os.Executable()
	if err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	defer null.Close()
	// syscall.ForkExec rather than os/exec, whose StartProcess forks a
	// throw-away child to probe for pidfds. Only what it needs: no
	// DIRLOCKD_* variable that could make it look like a process of the
	// server, and a process group of its own, out of reach of a
	// terminal's Ctrl-C.
	pid, err := syscall.ForkExec(self, []string{"dirlockd", fenceCommand, strconv.FormatInt(int64(killAt), 10)}, &syscall.ProcAttr{
		Env:   []string{"PATH=/usr/bin:/bin"},
		Files: []uintptr{null.Fd(), null.Fd(), os.Stderr.Fd(), uintptr(fds[1])},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("start the fence: %w", err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Kill(pid, unix.SIGKILL) // our unreaped child: the PID is still its
		return nil, err
	}
	return &fence{pid: pid, sock: fds[0]}, nil
}

// PID is the fence's PID.
func (f *fence) PID() int { return f.pid }

// Feed tells the fence the new kill time (on agent.Now's clock) and who is
// in the tree now. It reports a failure once; it never blocks.
func (f *fence) Feed(killAt time.Duration, tree pinned) error {
	at := int64(killAt)
	for i := 0; ; i += fenceMaxFDs {
		part := tree[min(i, len(tree)):min(i+fenceMaxFDs, len(tree))]
		var b strings.Builder
		last := 0
		if i+fenceMaxFDs >= len(tree) {
			last = 1
		}
		fmt.Fprintf(&b, "kill %d %d", at, last)
		var fds []int
		for _, m := range part {
			fmt.Fprintf(&b, " %d", m.pid)
			fds = append(fds, m.pfd)
		}
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		if err := unix.Sendmsg(f.sock, []byte(b.String()), oob, nil, 0); err != nil {
			if f.warn {
				return nil
			}
			f.warn = true
			return fmt.Errorf("cannot feed the fence (PID %d): %w", f.PID(), err)
		}
		if last == 1 {
			return nil
		}
	}
}

// Bye tells the fence the tree is gone: it exits.
func (f *fence) Bye() {
	unix.Sendmsg(f.sock, []byte("bye"), nil, nil, 0)
	unix.Close(f.sock)
	f.sock = -1
}

// cmdFence is the fence process: "dirlockd fence KILLAT", the socket on
// descriptor 3. It is not for users.
func cmdFence(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(stdout, "dirlockd fence is internal: dirlockd run --etcd starts it to kill the server's tree if dirlockd itself\nis stopped or killed before the lease can end (docs/lease.md). It is not run by hand.")
		return 0
	}
	if len(args) != 1 {
		fmt.Fprintln(stderr, "dirlockd fence is started by dirlockd run --etcd, not by hand")
		return exitcode.Usage
	}
	at, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil {
		fmt.Fprintln(stderr, "dirlockd fence: bad kill time:", err)
		return exitcode.Usage
	}
	// It ends by what dirlockd says, or by its own kill: not by the
	// signals that stop a server.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGPIPE)
	wrapper := os.Getppid()
	wfd, err := unix.PidfdOpen(wrapper, 0)
	if err != nil || os.Getppid() != wrapper {
		wfd = -1
	}
	fz := &fenceState{killAt: time.Duration(at), wrapper: member{pid: wrapper, pfd: wfd}}
	msgs := make(chan fenceMsg)
	go readFence(3, msgs)
	var next pinned // a tree being received in parts
	for {
		wait := fz.killAt - agent.Now()
		if wait <= 0 {
			n := fz.kill()
			fmt.Fprintf(stderr, "dirlockd fence: the lease was not renewed in time (dirlockd, PID %d, stopped or dead?): sent SIGKILL to %d processes of the server's tree\n", wrapper, n)
			return 0
		}
		select {
		case m, ok := <-msgs:
			switch {
			case !ok:
				msgs = nil // dirlockd died: kill at the last kill time
			case m.bye:
				return 0
			default:
				next = append(next, m.members...)
				if m.last {
					fz.members.Close()
					fz.members, next = next, nil
					fz.killAt = m.killAt
				}
			}
		case <-time.After(min(wait, 50*time.Millisecond)):
			// Re-read the clock: Go's timers stop while the host
			// is suspended, CLOCK_BOOTTIME does not.
		}
	}
}

// fenceMsg is one message from dirlockd.
type fenceMsg struct {
	bye     bool
	killAt  time.Duration
	last    bool
	members pinned
}

// readFence delivers dirlockd's messages; it closes msgs at EOF.
func readFence(sock int, msgs chan<- fenceMsg) {
	defer close(msgs)
	buf := make([]byte, 16<<10)
	oob := make([]byte, unix.CmsgSpace(fenceMaxFDs*4))
	for {
		var n, oobn int
		err := eintr.Retry(func() (err error) {
			n, oobn, _, _, err = unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
			return err
		})
		if err != nil || n == 0 {
			return
		}
		var fds []int
		if scms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, scm := range scms {
				if f, err := unix.ParseUnixRights(&scm); err == nil {
					fds = append(fds, f...)
				}
			}
		}
		f := strings.Fields(string(buf[:n]))
		if len(f) == 1 && f[0] == "bye" {
			msgs <- fenceMsg{bye: true}
			return
		}
		if len(f) < 3 || f[0] != "kill" || len(f)-3 != len(fds) {
			for _, fd := range fds {
				unix.Close(fd)
			}
			continue
		}
		at, _ := strconv.ParseInt(f[1], 10, 64)
		m := fenceMsg{killAt: time.Duration(at), last: f[2] == "1"}
		for i, s := range f[3:] {
			pid, _ := strconv.Atoi(s)
			m.members = append(m.members, member{pid: pid, pfd: fds[i]})
		}
		msgs <- m
	}
}

// fenceState is what the fence knows.
type fenceState struct {
	killAt  time.Duration // CLOCK_BOOTTIME
	wrapper member        // dirlockd; pfd -1 if it could not be pinned
	members pinned        // the tree when dirlockd last fed us
}

// kill SIGKILLs the tree: the members dirlockd named and everything below
// them, and everything below dirlockd while it lives. Killing a parent
// hands its children to dirlockd (the subreaper), so the walk repeats until
// it finds nobody new.
func (fz *fenceState) kill() int {
	self := os.Getpid()
	killed := map[int]bool{}
	for range 10 {
		var t pinned
		roots := append(pinned{}, fz.members...)
		if fz.wrapper.pfd >= 0 && unix.PidfdSendSignal(fz.wrapper.pfd, 0, nil, 0) == nil {
			roots = append(roots, fz.wrapper)
		}
		for _, m := range fz.members {
			if unix.PidfdSendSignal(m.pfd, 0, nil, 0) == nil && !killed[m.pid] {
				t = append(t, m)
			}
		}
		var below pinned
		for _, r := range roots {
			below = append(below, pinBelow(r, self)...)
		}
		fresh := 0
		for _, m := range append(t, below...) {
			if !killed[m.pid] && unix.PidfdSendSignal(m.pfd, unix.SIGKILL, nil, 0) == nil {
				killed[m.pid] = true
				fresh++
			}
		}
		below.Close()
		if fresh == 0 {
			break
		}
	}
	return len(killed)
}
