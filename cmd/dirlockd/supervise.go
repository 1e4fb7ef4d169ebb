package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

// Record fields run keeps besides the interlock's own.
const (
	childPIDKey = "child_pid" // the command dirlockd started
	mainPIDKey  = "main_pid"  // the server's main process, while there is one
)

// runner is one "dirlockd run": it supervises the server's whole tree (see
// tree.go) and holds the data directory until the last process of it has
// exited.
type runner struct {
	flags    runFlags
	opts     interlock.Options
	dir      string
	argv     []string
	log      *slog.Logger
	upstream string    // our own NOTIFY_SOCKET, when systemd supervises us
	lease    *runLease // the etcd lease (--etcd); nil without one
	fence    *fence    // the fence process (--etcd, fence.go); nil without one
	fenceBye bool      // the fence was told the tree is gone

	lock   *interlock.Lock
	rec    *recorder
	early  []syscall.Signal // signals received while acquiring, for the server once it is ready
	cmdPID int              // the command dirlockd started

	// main is the server's main process: the one signals go to first and
	// whose exit status run reports. It is the command while it lives (or
	// until --main-pid-file names another), then the only process left
	// under dirlockd, if exactly one is. nil when there is none.
	main     *member
	mainGone chan int // a main process that is not our child has exited
	mainFrom string   // what made it the main process, for logs
	cmdCode  int      // the command's exit status, once it has exited
	mainCode *int     // the last main process's exit status, if it was not the command
	badMain  string   // the last --main-pid-file content refused, to warn once

	ready     bool
	stopping  bool             // the record says stopping (we, or the server itself, began to stop)
	stopAsked bool             // a stop has begun: the first stop timer stands
	kill      <-chan time.Time // armed by the first stop request: SIGKILL when it fires
	stalled   bool             // the current stall of the storage has been reported
}

func (r *runner) run() int {
	path, err := exec.LookPath(r.argv[0])
	if err != nil {
		return r.execFailed(err)
	}
	// A closed log pipe must not kill the wrapper (the server would be
	// left running unsupervised): writes then fail, and that is all.
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)

	if r.lease != nil {
		if code := r.leaseDial(); code != 0 {
			r.releaseLease()
			return code
		}
	}
	began := time.Now()
	stopSig, err := r.acquire(sigs)
	if err != nil {
		r.releaseLease()
		if stopSig != 0 {
			r.log.Info("gave up acquiring the data directory", "datadir", r.dir, "signal", unix.SignalName(stopSig), "err", err)
			return exitSignalBase + int(stopSig)
		}
		return r.acquireFailed(err)
	}
	rec := r.lock.Record()
	r.log = r.log.With("datadir", rec.DataDir)
	r.log.Info("acquired the data directory", "lock_method", rec.LockMethod, "shm_key", pidfile.FormatKey(rec.ShmKey), "shm_id", rec.ShmID)
	if p := r.lock.Previous(); p != nil && !p.Clean() {
		r.log.Warn(p.String())
	}
	if t := r.lock.Takeover(); t != nil {
		r.log.Warn(t.String())
	}
	r.logStorage()
	if stopSig == 0 && r.lease != nil {
		var code int
		if stopSig, code = r.acquireLease(sigs, began); code != 0 {
			return r.finish(code)
		}
	}
	if stopSig != 0 {
		r.log.Info("stopped before the server started", "signal", unix.SignalName(stopSig))
		return r.finish(exitSignalBase + int(stopSig))
	}
	if r.lease != nil {
		name := fenceFileName(r.opts.Pidfile)
		if err := advanceFence(rec.DataDir, name, r.lease.l.Token(), r.lease.l.Key()); err != nil {
			var fb *FenceBackError
			if errors.As(err, &fb) {
				r.log.Error("cannot start: "+err.Error(), "fence_file", fb.Path,
					"hint", "find out why etcd went back; remove the fence file only if no server of the old history can still run")
				return r.finish(exitInvalid)
			}
			r.log.Error("cannot start: " + err.Error())
			if invalidStorage(err) {
				return r.finish(exitInvalid)
			}
			return r.finish(exitInternal)
		}
	}
	r.rec = newRecorder(r.lock, r.log, r.opts.Recheck)
	if r.lease != nil {
		r.rec.SetExtra(leaseKeyField, r.lease.l.Key())
		r.rec.SetExtra(fencingTokenField, strconv.FormatInt(r.lease.l.Token(), 10))
		r.leaseChanged() // arm the timers before the server starts
	}

	if err := becomeSubreaper(); err != nil {
		r.log.Error("cannot become the reaper of the server's tree", "err", err)
		return r.finish(exitInternal)
	}
	// An abstract socket: nothing on disk that a crash could leave
	// behind, or that a cleaner of /tmp could remove from under a server
	// that runs for months. notified judges every sender.
	nl, err := notify.Listen(notifyAddress())
	if err == nil {
		if err = fault("notify"); err != nil {
			nl.Close()
		}
	}
	if err != nil {
		r.log.Error("cannot listen for notifications", "err", err)
		return r.finish(exitInternal)
	}
	defer nl.Close()

	if r.lease != nil {
		dl, _ := r.lease.l.Deadline()
		if r.fence, err = startFence(dl - r.lease.timing.margin/2); err != nil {
			r.log.Error("cannot start the fence process", "err", err)
			return r.finish(exitInternal)
		}
		r.log.Debug("started the fence process", "pid", r.fence.PID())
	}
	if code := r.start(path, nl.Path()); code != 0 {
		return r.finish(code)
	}
	r.feedFence()
	return r.supervise(sigs, nl)
}

// acquire takes the data directory while watching for signals. SIGTERM or
// SIGINT gives up a wait (and is returned, so that run exits 128+N); the
// other forwarded signals are kept for the server.
func (r *runner) acquire(sigs <-chan os.Signal) (stop syscall.Signal, err error) {
	return r.interruptible(sigs, func(ctx context.Context) (err error) {
		r.lock, err = interlock.Acquire(ctx, r.dir, r.opts)
		return err
	})
}

// interruptible runs f while watching for signals: SIGTERM or SIGINT
// cancels f's context (and is returned); the other forwarded signals are
// kept for the server.
func (r *runner) interruptible(sigs <-chan os.Signal, f func(context.Context) error) (stop syscall.Signal, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	for {
		select {
		case s := <-sigs:
			sig := s.(syscall.Signal)
			if sig != syscall.SIGTERM && sig != syscall.SIGINT {
				r.early = append(r.early, sig)
				continue
			}
			if stop == 0 {
				stop = sig
				cancel()
			}
		case err := <-done:
			return stop, err
		}
	}
}

func notifyAddress() string {
	b := make([]byte, 8)
	rand.Read(b)
	return fmt.Sprintf("@dirlockd/notify/%d/%s", os.Getpid(), hex.EncodeToString(b))
}

// logStorage says what the locks are worth when the data directory is on
// shared storage.
func (r *runner) logStorage() {
	fs, err := r.lock.File().Filesystem()
	if err != nil || !fs.Shared() {
		return
	}
	m := r.lock.File().Method()
	if why := fs.LocalOnly(m); why != "" {
		r.log.Warn("shared storage with host-local locks, allowed by --allow-local-locks: "+why, "fs", fs.Type, "mount", fs.MountPoint)
		return
	}
	r.log.Info("shared storage: "+fs.Guarantee(m), "fs", fs.Type, "mount", fs.MountPoint)
}

// execFailed maps a failure to start COMMAND to run's status as a shell
// does: 127 when it is not there, 126 when it is there but cannot be
// executed. A fork that fails for want of resources (EAGAIN, ENOMEM,
// EMFILE) is dirlockd's own failure, 70.
func (r *runner) execFailed(err error) int {
	code := exitNoExec
	switch {
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		code = exitNotFound
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE):
		code = exitInternal
	}
	r.log.Error("cannot execute the command", "command", r.argv[0], "err", err)
	return code
}

func (r *runner) acquireFailed(err error) int {
	var he *interlock.HeldError
	var oe *interlock.OrphansError
	var be *interlock.BrokenLocksError
	switch {
	case errors.As(err, &be):
		r.log.Error("cannot start: "+err.Error(), "datadir", be.Dir, "holder_host", be.Record.Hostname, "holder_pid", be.Record.PID,
			"hint", "do not start anything in this directory from this host until every host's mount keeps locks (see docs/nfs.md)")
		return r.flags.conflictExit
	case errors.As(err, &he):
		r.log.Error("cannot start: "+err.Error(), "datadir", he.Dir, "holder_pid", he.PID, "host", he.Host,
			"since", he.Started.Format(time.RFC3339), "holders", he.Holders,
			"hint", "stop it first: dirlockd stop -D "+he.Dir+", or wait: --wait DURATION")
		return r.flags.conflictExit
	case errors.As(err, &oe):
		var b strings.Builder
		for i, o := range oe.Orphans {
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "%d (%s)", o.PID, o.Cmdline)
		}
		r.log.Error("cannot start: "+err.Error(), "datadir", oe.Dir, "orphans", b.String(),
			"hint", "stop the surviving processes of the old server, then start again")
		return exitOrphans
	case invalidStorage(err):
		r.log.Error("cannot start: "+err.Error(), "datadir", r.dir)
		return exitInvalid
	}
	r.log.Error("cannot start: "+err.Error(), "datadir", r.dir)
	return exitInternal
}

// start launches the server with the locked descriptor and our environment.
func (r *runner) start(path, notifySocket string) int {
	rec := r.lock.Record()
	env := append(childEnv(os.Environ()),
		"DIRLOCKD_DATADIR="+rec.DataDir,
		interlock.PidfileEnv+"="+r.lock.File().Path(),
		"DIRLOCKD_LOCK_FD="+strconv.Itoa(childLockFD),
		"DIRLOCKD_SHM_ID="+strconv.Itoa(rec.ShmID),
		interlock.TokenEnv+"="+rec.Token,
		"NOTIFY_SOCKET="+notifySocket,
	)
	env = append(env, r.leaseEnv()...)
	// syscall.ForkExec rather than os/exec: os.StartProcess first forks a
	// throw-away child to learn whether pidfds work, a fork on every start
	// that dirlockd, which pins its tree with pidfd_open anyway, does not
	// need. Descriptor 3 is the locked pidfile.
	//
	// Its own process group: a terminal's Ctrl-C reaches dirlockd alone,
	// which passes it on once; --signal-group can then reach the group.
	// No parent-death signal: if dirlockd dies, the server must live on and
	// keep the lock.
	pid, err := syscall.ForkExec(path, r.argv, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, 2, r.lock.File().OS().Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return r.execFailed(err)
	}
	r.cmdPID = pid
	if m, ok := pinChild(r.cmdPID); ok {
		r.setMain(m, "the command")
	}
	r.rec.SetExtra(childPIDKey, strconv.Itoa(r.cmdPID))
	r.log.Info("started the server", "pid", r.cmdPID, "command", strings.Join(r.argv, " "))
	return 0
}

// childVars are the variables run gives the server; any value the caller's
// environment has for them is replaced.
var childVars = []string{"NOTIFY_SOCKET", "DIRLOCKD_DATADIR", interlock.PidfileEnv, "DIRLOCKD_LOCK_FD", "DIRLOCKD_SHM_ID", interlock.TokenEnv,
	fencingTokenEnv, leaseKeyEnv, leaseTTLEnv}

// childEnv drops from env what the server must get from us, not from our
// caller, and keeps everything else (other DIRLOCKD_ variables included).
func childEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(childVars, k)
	})
}

// exit is a process of the tree that dirlockd reaped.
type exit struct {
	pid int
	ws  unix.WaitStatus
}

// supervise runs until the last process of the server's tree has exited,
// and returns run's exit status. Nothing in this loop touches the storage:
// the recorder does, on its own goroutine.
func (r *runner) supervise(sigs chan os.Signal, nl *notify.Listener) int {
	exits := make(chan exit, 16)
	go reapAll(exits)

	readyTCP := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	switch {
	case r.flags.readyTCP != "":
		go pollTCP(ctx, r.flags.readyTCP, readyTCP)
	case !r.flags.readyNotify:
		r.markReady("started")
	}
	var stallTick <-chan time.Time
	if r.opts.Recheck > 0 {
		t := time.NewTicker(min(time.Second, r.stallLimit()/4))
		defer t.Stop()
		stallTick = t.C
	}
	var mainFile <-chan time.Time
	if r.flags.mainPIDFile != "" {
		t := time.NewTicker(mainPIDFilePoll)
		defer t.Stop()
		mainFile = t.C
	}
	msgs := nl.Messages()
	var leaseChanged <-chan struct{}
	if r.lease != nil {
		leaseChanged = r.lease.l.Changed()
	}
	for {
		leaseTerm, leaseKill := r.leaseTimers()
		select {
		case e, ok := <-exits:
			if !ok {
				return r.finish(r.exitCode())
			}
			r.exited(e.pid, &e.ws)
			r.helpersIfAlone()
		case pid := <-r.mainGone:
			r.mainGoneElsewhere(pid)
			r.helpersIfAlone()
		case s := <-sigs:
			sig := s.(syscall.Signal)
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				r.stop(sig, "signal "+unix.SignalName(sig))
				continue
			}
			r.forward(sig)
		case <-r.kill:
			r.kill = nil
			t := pinTree(r.helpers()...)
			r.log.Warn("the server did not exit in time: sending SIGKILL to its tree", "stop_timeout", r.flags.stopTimeout, "pids", t.PIDs())
			t.Signal(unix.SIGKILL)
			t.Close()
		case m, ok := <-msgs:
			if !ok {
				msgs = nil
				continue
			}
			r.notified(m)
		case <-readyTCP:
			r.markReady("tcp " + r.flags.readyTCP)
		case res := <-r.rec.Results():
			r.rechecked(res)
		case <-stallTick:
			switch d := r.rec.BusyFor(); {
			case d == 0:
				r.stalled = false
			case d > r.stallLimit() && !r.stalled:
				r.stalled = true
				r.lost(fmt.Sprintf("the storage has not answered for %v: another host may take over", r.stallLimit()))
			}
		case <-mainFile:
			if r.readMainPIDFile() {
				mainFile = nil
			}
		case <-leaseChanged:
			r.leaseChanged()
		case <-leaseTerm:
			r.leaseTerm()
		case <-leaseKill:
			r.leaseKill()
		}
	}
}

// mainPIDFilePoll is how often --main-pid-file is read until it names the
// main process.
const mainPIDFilePoll = 100 * time.Millisecond

// exited handles a process of the tree that dirlockd reaped.
func (r *runner) exited(pid int, ws *unix.WaitStatus) {
	if r.helperExited(pid, *ws) {
		return
	}
	isMain := r.main != nil && pid == r.main.pid
	if pid == r.cmdPID {
		r.cmdCode = exitCode(*ws)
		if !isMain {
			r.logExit("the command", pid, *ws)
		}
	}
	switch {
	case isMain:
		r.mainExited(ws)
	case pid != r.cmdPID:
		r.log.Debug("a process of the server's tree exited", "pid", pid, "status", describe(*ws))
	}
}

// mainGoneElsewhere handles the exit of a main process that was not our
// child when it became the main one, so its parent, not we, reaps it.
func (r *runner) mainGoneElsewhere(pid int) {
	if r.main == nil || r.main.pid != pid {
		return
	}
	var info unix.Siginfo
	if unix.Waitid(unix.P_PIDFD, r.main.pfd, &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil) == nil && info.Signo != 0 {
		return // reparented to us meanwhile: reapAll brings its status
	}
	r.mainExited(nil)
}

// mainExited handles the end of the main process; ws is nil when its status
// is not ours to know.
func (r *runner) mainExited(ws *unix.WaitStatus) {
	m := *r.main
	r.main = nil
	unix.Close(m.pfd)
	r.rec.SetExtra(mainPIDKey, "")
	var rest pinned
	if hasChildren() {
		rest = pinTree(r.helpers()...)
		defer rest.Close()
	}
	wasCommand := m.pid == r.cmdPID
	switch {
	case wasCommand && len(rest) == 0:
		r.logExit("the server", m.pid, *ws) // the command was the whole server
	case wasCommand:
		r.logExit("the command", m.pid, *ws)
	case ws != nil:
		r.logExit("the server's main process", m.pid, *ws)
		code := exitCode(*ws)
		r.mainCode = &code
	default:
		r.log.Warn("the server's main process exited; its exit status is its parent's to know", "pid", m.pid)
	}
	if len(rest) == 0 {
		return // the tree is gone: reapAll says so next
	}
	pids := rest.PIDs()
	switch {
	case r.stopAsked:
		r.log.Info("the main process exited; stopping the processes left in its tree", "pids", pids)
		rest.Signal(unix.SIGTERM)
		rest.Signal(unix.SIGCONT)
	case wasCommand && r.cmdCode != 0:
		// A start command that fails has failed the server, whatever
		// it left running (systemd fails a Type=forking unit alike).
		r.beginStop(fmt.Sprintf("the command failed (status %d); stopping what it left behind", r.cmdCode))
		rest.Signal(unix.SIGTERM)
		rest.Signal(unix.SIGCONT)
	case wasCommand && r.flags.mainPIDFile != "":
		r.log.Info("the command exited; waiting for --main-pid-file to name the main process", "file", r.flags.mainPIDFile, "pids", pids)
	case wasCommand:
		var top []int
		for _, t := range rest {
			if t.parent == os.Getpid() {
				top = append(top, t.pid)
			}
		}
		if len(top) == 1 {
			if m, ok := pin(top[0], os.Getpid()); ok {
				r.setMain(m, "the only process left")
				r.log.Info("the command exited; the server's main process is now the only process left", "pid", m.pid, "command", proc.Cmdline(m.pid))
				return
			}
		}
		r.log.Info("the command exited; holding the data directory until the last process of its tree exits", "pids", pids)
	default:
		r.beginStop("the server's main process exited")
		rest.Signal(unix.SIGTERM)
		rest.Signal(unix.SIGCONT)
	}
}

// setMain makes m the main process. A main process that is not our child is
// watched through its pidfd, since its exit reaches its parent, not us.
func (r *runner) setMain(m member, from string) {
	if r.main != nil {
		unix.Close(r.main.pfd)
	}
	r.main, r.mainFrom = &m, from
	r.rec.SetExtra(mainPIDKey, strconv.Itoa(m.pid))
	if m.parent == os.Getpid() {
		return
	}
	pfd, err := unix.Dup(m.pfd)
	if err != nil {
		return
	}
	if r.mainGone == nil {
		r.mainGone = make(chan int, 1)
	}
	go func(pid int) {
		defer unix.Close(pfd)
		fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != unix.EINTR {
				break
			}
		}
		r.mainGone <- pid
	}(m.pid)
}

// readMainPIDFile makes the process named by --main-pid-file the main one,
// if it is a live process of the server's tree, and reports whether it did.
// A PID of any other process is refused: it is not ours to signal.
func (r *runner) readMainPIDFile() bool {
	b, err := os.ReadFile(r.flags.mainPIDFile)
	if err != nil {
		return false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSpace(line)
	if line == "" {
		return false // still being written
	}
	pid, err := strconv.Atoi(line)
	if r.isHelper(pid) {
		err = errors.New("the fence process or the etcd agent")
	}
	if err == nil && r.main != nil && r.main.pid == pid {
		return true
	}
	m, ok := member{}, false
	if err == nil && pid > 0 {
		m, ok = pinMain(pid)
	}
	if !ok {
		if line != r.badMain {
			r.badMain = line
			r.log.Warn("--main-pid-file does not name a live process of the server's tree: ignored", "file", r.flags.mainPIDFile, "content", line)
		}
		return false
	}
	r.setMain(m, r.flags.mainPIDFile)
	r.log.Info("the server's main process", "pid", pid, "from", r.flags.mainPIDFile, "command", proc.Cmdline(pid))
	return true
}

// forward passes a signal on: to the main process (and its process group,
// with --signal-group), or, with no main process, to each process dirlockd
// is the parent of.
func (r *runner) forward(sig syscall.Signal) {
	t := pinTree(r.helpers()...)
	defer t.Close()
	if r.targets(t, false).Signal(unix.Signal(sig)) == 0 {
		r.log.Warn("no process of the server's tree got the signal", "signal", unix.SignalName(sig))
	}
}

// stop begins stopping the server with sig: the main process gets it, and so
// does every process outside the main process's own subtree, which the main
// process cannot be expected to stop; with no main process, every process of
// the tree. SIGCONT follows, as systemd sends it: a server stopped by job
// control would never act on the signal otherwise.
func (r *runner) stop(sig syscall.Signal, why string) {
	t := pinTree(r.helpers()...)
	defer t.Close()
	targets := r.targets(t, true)
	targets.Signal(unix.Signal(sig))
	targets.Signal(unix.SIGCONT)
	r.beginStop(why)
}

// targets picks from the tree t who gets a signal. With a main process: the
// main process, with --signal-group the rest of its process group, and when
// stopping, every process outside its subtree. With none: dirlockd's own
// children, or when stopping, everyone.
func (r *runner) targets(t pinned, stopping bool) pinned {
	if r.main == nil {
		if stopping {
			return t
		}
		return slices.DeleteFunc(slices.Clone(t), func(m member) bool { return m.parent != os.Getpid() })
	}
	main := *r.main
	var outside []int
	if stopping {
		outside = t.Without(main.pid).PIDs()
	}
	out := pinned{main}
	for _, m := range t {
		if m.pid != main.pid && (r.flags.signalGroup && m.pgid == main.pgid || slices.Contains(outside, m.pid)) {
			out = append(out, m)
		}
	}
	return out
}

// lost applies --on-lost to an interlock that is no longer ours.
func (r *runner) lost(reason string) {
	r.log.Error("the data directory interlock is lost: "+reason, "on_lost", r.flags.onLost)
	if r.flags.onLost == "shutdown" && !r.stopAsked {
		r.stop(syscall.SIGTERM, "interlock lost")
	}
}

// rechecked acts on the outcome of a recheck.
func (r *runner) rechecked(res checkResult) {
	if res.removed != nil {
		rec := r.lock.Record()
		attrs := []any{"old_shm_key", pidfile.FormatKey(res.oldKey), "old_shm_id", res.oldShmID}
		if res.renewed {
			attrs = append(attrs, "shm_key", pidfile.FormatKey(rec.ShmKey), "shm_id", rec.ShmID)
			r.log.Warn(res.removed.Error()+"; the lock is still ours: a new segment took its place", attrs...)
		} else {
			r.log.Error(res.removed.Error(), attrs...)
		}
	}
	switch {
	case errors.Is(res.err, interlock.ErrLost):
		r.lost(res.err.Error())
	case res.err != nil:
		r.log.Error("the recheck failed", "err", res.err)
	}
}

// stallLimit is how long a storage operation may take before the storage
// counts as gone: twice the recheck interval (the heartbeat is then three
// intervals old, the least a starter on another host watches it before
// taking over), and never less than stallFloor, so that a slow fsync on a
// busy disk is not a loss.
func (r *runner) stallLimit() time.Duration { return max(2*r.opts.Recheck, stallFloor) }

const stallFloor = 5 * time.Second

// beginStop records that the server is being stopped, once, and arms the
// timer after which its tree gets SIGKILL. Later requests change nothing:
// the first timer stands.
func (r *runner) beginStop(why string) {
	if r.stopAsked {
		return
	}
	r.stopAsked = true
	r.log.Info("stopping the server", "reason", why, "stop_timeout", r.flags.stopTimeout)
	if !r.stopping {
		r.setStatus(pidfile.Stopping)
		r.upstreamSend(notify.Field{Key: "STOPPING", Value: "1"})
	}
	r.kill = time.After(r.flags.stopTimeout)
}

func (r *runner) setStatus(s pidfile.Status) {
	r.stopping = r.stopping || s == pidfile.Stopping
	r.rec.SetStatus(s)
}

func (r *runner) markReady(via string) {
	if r.ready || r.stopping {
		return
	}
	r.ready = true
	r.setStatus(pidfile.Ready)
	r.log.Info("the server is ready", "via", via)
	r.upstreamSend(notify.Field{Key: "READY", Value: "1"})
	r.passEarly(via != "started")
}

// passEarly passes on the signals that arrived while dirlockd was still
// acquiring, once the server is ready: only a server that said so (READY=1,
// or its port open) is known to have set up its handlers, and SIGHUP's
// default action would kill one that has not. Without a readiness protocol
// there is no such moment, and the signals are dropped, with a log line: a
// server that has just started has read its configuration and opened its
// logs afresh anyway, which is what a reload or a reopen asks.
func (r *runner) passEarly(ready bool) {
	for _, s := range r.early {
		if !ready {
			r.log.Warn("dropped a signal received while acquiring: the server has no readiness protocol (--ready-notify, --ready-tcp), so there is no moment it is known to handle it", "signal", unix.SignalName(s))
			continue
		}
		r.log.Info("passing on a signal received while acquiring", "signal", unix.SignalName(s))
		r.forward(s)
	}
	r.early = nil
}

// notified handles a datagram from the server's NOTIFY_SOCKET. The socket is
// abstract, so any process of the network namespace can reach it: only a
// sender of our own user (or root, who could do anything anyway) or a
// process of the server's tree is heard.
func (r *runner) notified(m notify.Message) {
	if m.PID <= 0 || m.UID != os.Geteuid() && m.UID != 0 && !proc.DescendsFrom(m.PID, os.Getpid()) {
		r.log.Warn("ignored a notification from a process outside the server's tree", "pid", m.PID, "uid", m.UID, "fields", m.Fields)
		return
	}
	r.log.Debug("notification from the server", "pid", m.PID, "fields", m.Fields)
	if err := notify.Forward(r.upstream, m, os.Getpid()); err != nil {
		r.log.Warn("cannot forward the notification to systemd", "err", err)
	}
	switch {
	case m.Ready():
		r.markReady("notify")
	case m.Stopping() && !r.stopping:
		r.setStatus(pidfile.Stopping)
	}
}

func (r *runner) upstreamSend(fields ...notify.Field) {
	if r.upstream == "" {
		return
	}
	fields = append(fields, notify.Field{Key: "MAINPID", Value: strconv.Itoa(os.Getpid())})
	if err := notify.Send(r.upstream, fields...); err != nil {
		r.log.Warn("cannot notify systemd", "err", err)
	}
}

// logExit logs how a process of the tree ended.
func (r *runner) logExit(what string, pid int, ws unix.WaitStatus) {
	if ws.Signaled() {
		r.log.Info(what+" was killed by a signal", "pid", pid, "signal", unix.SignalName(ws.Signal()))
		return
	}
	r.log.Info(what+" exited", "pid", pid, "status", ws.ExitStatus())
}

// exitCode is the status run reports for a process that ended so: its exit
// status, or 128+N if signal N killed it.
func exitCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return exitSignalBase + int(ws.Signal())
	}
	return exitInternal
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return unix.SignalName(ws.Signal())
	}
	return strconv.Itoa(ws.ExitStatus())
}

// exitCode is run's status once the tree is gone: the last main process's,
// if its status is known, else the command's.
func (r *runner) exitCode() int {
	if r.mainCode != nil {
		return *r.mainCode
	}
	return r.cmdCode
}

// finish releases the lease, then the interlock, and returns code. By then
// the server's tree is gone, so the record's "stopped" proves that nobody is
// left.
func (r *runner) finish(code int) int {
	if r.rec != nil {
		r.rec.Stop()
	}
	if r.fence != nil && !r.fenceBye {
		r.fence.Bye()
	}
	r.releaseLease()
	if err := r.lock.Release(); err != nil {
		r.log.Error("release incomplete", "err", err)
		if code == 0 {
			code = exitInternal
		}
	}
	r.log.Info("released the data directory")
	return code
}

// reapAll reaps every process the kernel hands dirlockd, the server's and
// any orphan of its tree, and closes exits once dirlockd has no child left:
// the tree is gone then, and nothing can join it again.
func reapAll(exits chan<- exit) {
	defer close(exits)
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		if ws.Exited() || ws.Signaled() {
			exits <- exit{pid, ws}
		}
	}
}

// pollTCP closes ready once addr accepts a connection.
func pollTCP(ctx context.Context, addr string, ready chan<- struct{}) {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			close(ready)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
