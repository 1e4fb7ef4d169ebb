package lease

import (
	"errors"
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
	"github.com/dirlockd/dirlockd/internal/proc"
)

// The watchdog keeps the lease's rule when dirlockd cannot: if dirlockd is
// stopped (SIGSTOP, a stuck wrapper) or killed, nobody renews the lease, and
// the server's tree must still be dead before the lease can end. The
// watchdog is a small process of its own ("dirlockd fence", started by run --etcd
// before the server) that dirlockd feeds, over a socket, with each new kill
// time and pidfds of every process of the tree. If no newer kill time comes
// in time, it walks the tree from those pidfds (and from dirlockd, when
// dirlockd is still its parent) and SIGKILLs all of it. dirlockd says "bye"
// once the tree is gone; a socket that closes without "bye" means dirlockd
// died, and the fence kills at the last kill time it was told.
//
// The watchdog is dirlockd's child, so dirlockd, the subreaper, reaps it like
// a process of the tree: run leaves it out of the tree (Guard.Helpers),
// counts the tree gone when the fence is its only child left, and then says
// bye. It holds none of the interlock's witnesses: no pidfile descriptor, no
// segment, no token in its environment.
//
// Kill times travel as CLOCK_BOOTTIME nanoseconds (Now), which,
// unlike Go's monotonic clock, go on while the host is suspended, as etcd's
// clock does.

// watchdogMaxFDs bounds the pidfds of one message (the kernel's SCM_MAX_FD is
// 253).
const watchdogMaxFDs = 200

// A Watchdog is dirlockd's handle on its watchdog process.
type Watchdog struct {
	pid  int
	sock int // our end, non-blocking: a stuck watchdog never blocks run
	warn bool
}

// StartWatchdog starts the watchdog, the executable path with args and
// then its first kill time (on Now's clock) as the last argument, the
// socket on descriptor 3. The executable runs RunWatchdog.
func StartWatchdog(killAt time.Duration, path string, args ...string) (*Watchdog, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fence socket: %w", err)
	}
	defer unix.Close(fds[1])
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
	pid, err := syscall.ForkExec(path, append(args, strconv.FormatInt(int64(killAt), 10)), &syscall.ProcAttr{
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
	return &Watchdog{pid: pid, sock: fds[0]}, nil
}

// PID is the watchdog's PID.
func (f *Watchdog) PID() int { return f.pid }

// Feed tells the watchdog the new kill time (on Now's clock) and who is
// in the tree now. It reports a failure once; it never blocks.
func (f *Watchdog) Feed(killAt time.Duration, tree proc.Tree) error {
	at := int64(killAt)
	for i := 0; ; i += watchdogMaxFDs {
		part := tree[min(i, len(tree)):min(i+watchdogMaxFDs, len(tree))]
		var b strings.Builder
		last := 0
		if i+watchdogMaxFDs >= len(tree) {
			last = 1
		}
		fmt.Fprintf(&b, "kill %d %d", at, last)
		var fds []int
		for _, m := range part {
			fmt.Fprintf(&b, " %d", m.PID)
			fds = append(fds, m.FD())
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

// Bye tells the watchdog the tree is gone: it exits.
func (f *Watchdog) Bye() {
	unix.Sendmsg(f.sock, []byte("bye"), nil, nil, 0)
	unix.Close(f.sock)
	f.sock = -1
}

// WatchdogCommand is the hidden command of dirlockd that runs the watchdog
// process (WatchdogMain); it is in no command table: users never run it.
const WatchdogCommand = "fence"

// WatchdogMain is the watchdog process: "dirlockd fence KILLAT", the
// socket on descriptor 3. It is not for users.
func WatchdogMain(args []string, stdout, stderr io.Writer) int {
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
	return RunWatchdog(at, 3, stderr)
}

// RunWatchdog is the watchdog process's work, from its first kill time (on
// Now's clock) until dirlockd says bye (0) or it has killed the tree; sock
// is its end of the socket StartWatchdog made. Lines for the log go to
// stderr.
func RunWatchdog(at int64, sock int, stderr io.Writer) int {
	// It ends by what dirlockd says, or by its own kill: not by the
	// signals that stop a server.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGPIPE)
	wrapper := os.Getppid()
	w, err := proc.Open(wrapper)
	if err == nil && os.Getppid() != wrapper {
		w.Close()
		err = errors.New("reparented")
	}
	fz := &watchdogState{killAt: time.Duration(at)}
	if err == nil {
		fz.wrapper = &w
	}
	msgs := make(chan watchdogMsg)
	go readWatchdog(sock, msgs)
	var next proc.Tree // a tree being received in parts
	for {
		wait := fz.killAt - Now()
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

// watchdogMsg is one message from dirlockd.
type watchdogMsg struct {
	bye     bool
	killAt  time.Duration
	last    bool
	members proc.Tree
}

// readWatchdog delivers dirlockd's messages; it closes msgs at EOF.
func readWatchdog(sock int, msgs chan<- watchdogMsg) {
	defer close(msgs)
	buf := make([]byte, 16<<10)
	oob := make([]byte, unix.CmsgSpace(watchdogMaxFDs*4))
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
			msgs <- watchdogMsg{bye: true}
			return
		}
		if len(f) < 3 || f[0] != "kill" || len(f)-3 != len(fds) {
			for _, fd := range fds {
				unix.Close(fd)
			}
			continue
		}
		at, _ := strconv.ParseInt(f[1], 10, 64)
		m := watchdogMsg{killAt: time.Duration(at), last: f[2] == "1"}
		for i, s := range f[3:] {
			pid, _ := strconv.Atoi(s)
			m.members = append(m.members, proc.Adopt(pid, fds[i]))
		}
		msgs <- m
	}
}

// watchdogState is what the watchdog knows.
type watchdogState struct {
	killAt  time.Duration // CLOCK_BOOTTIME
	wrapper *proc.Pinned  // dirlockd; nil if it could not be pinned
	members proc.Tree     // the tree when dirlockd last fed us
}

// kill SIGKILLs the tree: the members dirlockd named and everything below
// them, and everything below dirlockd while it lives. Killing a parent
// hands its children to dirlockd (the subreaper), so the walk repeats until
// it finds nobody new.
func (fz *watchdogState) kill() int {
	self := os.Getpid()
	killed := map[int]bool{}
	for range 10 {
		var t proc.Tree
		roots := append(proc.Tree{}, fz.members...)
		if fz.wrapper != nil && fz.wrapper.Alive() {
			roots = append(roots, *fz.wrapper)
		}
		for _, m := range fz.members {
			if m.Alive() && !killed[m.PID] {
				t = append(t, m)
			}
		}
		var below proc.Tree
		for _, r := range roots {
			below = append(below, proc.PinBelow(r, self)...)
		}
		fresh := 0
		for _, m := range append(t, below...) {
			if !killed[m.PID] && m.Signal(unix.SIGKILL) == nil {
				killed[m.PID] = true
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
