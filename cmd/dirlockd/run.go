package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

// forwarded are the signals run passes on to the server.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// childLockFD is the descriptor number of the locked pidfile in the server:
// the first of exec.Cmd.ExtraFiles.
const childLockFD = 3

type runFlags struct {
	conflictExit int
	signalGroup  bool
	stopTimeout  time.Duration
	readyNotify  bool
	readyTCP     string
	onLost       string
}

const runAbout = `Run COMMAND as the one server of the data directory: acquire the interlock,
start COMMAND with the locked pidfile descriptor inherited (so the lock lives as
long as any process of the server's tree keeps it, even if dirlockd dies), pass
signals on, track readiness, recheck the interlock, and release it in order when
COMMAND exits. dirlockd exits with COMMAND's status (128+N if killed by signal N).

COMMAND's environment gets DIRLOCKD_DATADIR, DIRLOCKD_PIDFILE, DIRLOCKD_LOCK_FD,
DIRLOCKD_SHM_ID, DIRLOCKD_TOKEN, and a NOTIFY_SOCKET of dirlockd's own: READY=1
marks the pidfile status ready, STOPPING=1 stopping. Under systemd ($NOTIFY_SOCKET
set) the notifications are forwarded with MAINPID=dirlockd, so Type=notify works.
Readiness: --ready-notify waits for READY=1; --ready-tcp for the port; with
neither, the server counts as ready once started.

SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are passed to COMMAND (to
its process group with --signal-group). After SIGTERM or SIGINT, COMMAND gets
--stop-timeout to exit before SIGKILL. As PID 1 (a container's entrypoint)
dirlockd also reaps orphaned processes.

Every --recheck, dirlockd checks that it still holds the directory and writes
a heartbeat through the locked descriptor; a failed check, a write the storage
refuses (EIO: an NFSv4 lock lost with its lease), or a recheck that does not
return within twice --recheck (a storage that stopped answering) counts as a
lost interlock: --on-lost shutdown stops COMMAND.

On shared storage (NFS, CIFS, FUSE) dirlockd refuses mounts whose locks stay
on this host (NFS nolock or local_lock=, CIFS nobrl; --allow-local-locks if no
other host mounts it), and before taking over from a holder on another host
that did not stop cleanly it watches that holder's heartbeat for
--takeover-after: if it moves, the storage's locks are broken, and dirlockd
refuses (exit 75). See docs/nfs.md.

Exit status when COMMAND cannot be started: 75 data directory held by a live
instance (or --conflict-exit-code), 76 orphaned processes of a dead holder
survive, 78 invalid data directory, pidfile or configuration (or a full or
read-only filesystem, or host-local locks on shared storage), 64 usage, 70
internal error, 127 command not found, 126 command not executable.`

const runExamples = `  dirlockd run -D /var/lib/redis -- redis-server --supervised systemd --dir /var/lib/redis
  dirlockd run -D /var/lib/etcd --wait 30s -- etcd --data-dir /var/lib/etcd
  dirlockd run -D /srv/app --ready-tcp 127.0.0.1:8080 --signal-group -- ./server
`

func cmdRun(args []string, stdout, stderr io.Writer) int {
	var g globals
	var f runFlags
	fs := command("run", "run -D DIR [flags] -- COMMAND [ARGS...]", runAbout, runExamples, false, &g, stderr)
	fs.DurationVar(&g.opts.Wait, "wait", 0, "how long to wait for a held data directory (0: fail at once)")
	fs.IntVar(&f.conflictExit, "conflict-exit-code", exitHeld, "exit status when the directory is held by a live instance")
	fs.BoolVar(&f.signalGroup, "signal-group", false, "pass signals to COMMAND's whole process group")
	fs.DurationVar(&f.stopTimeout, "stop-timeout", 60*time.Second, "after SIGTERM/SIGINT, how long COMMAND may take to exit before SIGKILL")
	fs.BoolVar(&f.readyNotify, "ready-notify", false, "COMMAND sends READY=1 (sd_notify): ready only then")
	fs.StringVar(&f.readyTCP, "ready-tcp", "", "ready when HOST:PORT accepts a TCP connection")
	fs.DurationVar(&g.opts.Recheck, "recheck", 10*time.Second, "how often to recheck the interlock and write a heartbeat (0: never)")
	fs.StringVar(&f.onLost, "on-lost", "shutdown", "when the recheck finds the interlock lost: shutdown (stop COMMAND) or log")
	fs.DurationVar(&g.opts.TakeoverAfter, "takeover-after", 0, "on shared storage, how long to watch the heartbeat of a holder on another host before taking over (0: 3 x the longer of --recheck and its interval)")
	rest, err := g.parse(fs, args, stdout, stderr)
	if err != nil {
		return exitFor(err)
	}
	usageErr := func(format string, a ...any) int { return usageError(stderr, "run", format, a...) }
	switch {
	case len(rest) == 0:
		return usageErr("no command: dirlockd run -D DIR [flags] -- COMMAND [ARGS...]")
	case fs.ArgsLenAtDash() > 0:
		return usageErr("unexpected argument %q before --", rest[0])
	case f.conflictExit < 1 || f.conflictExit > 255:
		return usageErr("--conflict-exit-code %d: want 1 to 255", f.conflictExit)
	case f.onLost != "shutdown" && f.onLost != "log":
		return usageErr("--on-lost %q: want shutdown or log", f.onLost)
	case f.stopTimeout < 0 || g.opts.Recheck < 0 || g.opts.Wait < 0 || g.opts.TakeoverAfter < 0:
		return usageErr("durations must not be negative")
	}
	if f.readyTCP != "" {
		if _, _, err := net.SplitHostPort(f.readyTCP); err != nil {
			return usageErr("--ready-tcp %q: %v", f.readyTCP, err)
		}
	}
	r := &runner{flags: f, opts: g.opts, dir: g.dirs[0], argv: rest, log: g.log, upstream: os.Getenv("NOTIFY_SOCKET")}
	return r.run()
}

// runner is one "dirlockd run".
type runner struct {
	flags    runFlags
	opts     interlock.Options
	dir      string
	argv     []string
	log      *slog.Logger
	upstream string // our own NOTIFY_SOCKET, when systemd supervises us

	lock      *interlock.Lock
	child     *os.Process
	ready     bool
	stopping  bool             // the pidfile says stopping (we, or the server itself, began to stop)
	kill      <-chan time.Time // armed by the first stop request: SIGKILL when it fires
	stopAsked bool
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

	// A SIGTERM or SIGINT while waiting for the directory gives up the wait.
	ctx, cancel := context.WithCancel(context.Background())
	var early []os.Signal
	acquired := make(chan struct{})
	waiter := make(chan struct{})
	go func() {
		defer close(waiter)
		for {
			select {
			case s := <-sigs:
				early = append(early, s)
				if s == syscall.SIGTERM || s == syscall.SIGINT {
					cancel()
				}
			case <-acquired:
				return
			}
		}
	}()
	r.lock, err = interlock.Acquire(ctx, r.dir, r.opts)
	close(acquired)
	<-waiter
	cancel()
	if err != nil {
		return r.acquireFailed(err)
	}
	rec := r.lock.Record()
	r.log = r.log.With("datadir", rec.DataDir)
	r.log.Info("acquired the data directory", "lock_method", rec.LockMethod, "shm_key", fmt.Sprintf("0x%08x", uint32(rec.ShmKey)), "shm_id", rec.ShmID)
	if p := r.lock.Previous(); p != nil && !p.Clean() {
		r.log.Warn(p.String())
	}
	if t := r.lock.Takeover(); t != nil {
		r.log.Warn(t.String())
	}
	r.logStorage()
	for _, s := range early {
		if s == syscall.SIGTERM || s == syscall.SIGINT {
			r.log.Info("stopped before the server started", "signal", s)
			return r.finish(exitSignalBase + int(s.(syscall.Signal)))
		}
	}

	notifyDir, err := os.MkdirTemp("", "dirlockd-notify-")
	if err != nil {
		r.log.Error("cannot make the notify socket directory", "err", err)
		return r.finish(exitInternal)
	}
	defer os.RemoveAll(notifyDir)
	nl, err := notify.Listen(notifyDir)
	if err != nil {
		r.log.Error("cannot listen for notifications", "err", err)
		return r.finish(exitInternal)
	}
	defer nl.Close()

	if code := r.start(path, nl.Path()); code != 0 {
		return r.finish(code)
	}
	return r.supervise(sigs, nl)
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

func (r *runner) execFailed(err error) int {
	code := exitNotFound
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOEXEC) {
		code = exitNoExec
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
	cmd := exec.Command(path, r.argv[1:]...)
	cmd.Args[0] = r.argv[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{r.lock.File().OS()}
	cmd.Env = append(childEnv(os.Environ()),
		"DIRLOCKD_DATADIR="+rec.DataDir,
		interlock.PidfileEnv+"="+r.lock.File().Path(),
		"DIRLOCKD_LOCK_FD="+strconv.Itoa(childLockFD),
		"DIRLOCKD_SHM_ID="+strconv.Itoa(rec.ShmID),
		interlock.TokenEnv+"="+rec.Token,
		"NOTIFY_SOCKET="+notifySocket,
	)
	// Its own process group: a terminal's Ctrl-C reaches dirlockd alone,
	// which passes it on once; --signal-group can then reach the whole tree.
	// No parent-death signal: if dirlockd dies, the server must live on and
	// keep the lock.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return r.execFailed(err)
	}
	r.child = cmd.Process
	if err := r.lock.Update(func(p *pidfile.Record) { setExtra(p, "child_pid", strconv.Itoa(cmd.Process.Pid)) }); err != nil {
		r.log.Error("cannot record the server's PID in the pidfile", "err", err)
	}
	r.log.Info("started the server", "pid", cmd.Process.Pid, "command", strings.Join(r.argv, " "))
	return 0
}

// childVars are the variables run gives the server; any value the caller's
// environment has for them is replaced.
var childVars = []string{"NOTIFY_SOCKET", "DIRLOCKD_DATADIR", interlock.PidfileEnv, "DIRLOCKD_LOCK_FD", "DIRLOCKD_SHM_ID", interlock.TokenEnv}

// childEnv drops from env what the server must get from us, not from our
// caller, and keeps everything else (other DIRLOCKD_ variables included).
func childEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(childVars, k)
	})
}

func setExtra(p *pidfile.Record, k, v string) {
	if p.Extra == nil {
		p.Extra = map[string]string{}
	}
	p.Extra[k] = v
}

// supervise runs until the server exits, and returns run's exit status.
func (r *runner) supervise(sigs chan os.Signal, nl *notify.Listener) int {
	exited := make(chan unix.WaitStatus, 1)
	go reap(r.child.Pid, exited)

	readyTCP := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	switch {
	case r.flags.readyTCP != "":
		go pollTCP(ctx, r.flags.readyTCP, readyTCP)
	case !r.flags.readyNotify:
		r.markReady("started")
	}
	var recheck <-chan time.Time
	if r.opts.Recheck > 0 {
		t := time.NewTicker(r.opts.Recheck)
		defer t.Stop()
		recheck = t.C
	}
	msgs := nl.Messages()
	for {
		select {
		case ws := <-exited:
			return r.finish(r.exitStatus(ws))
		case s := <-sigs:
			sig := s.(syscall.Signal)
			r.signal(sig)
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				// A server stopped by job control (SIGTTIN) would
				// never act on the signal: wake it, as systemd does.
				r.signal(syscall.SIGCONT)
				r.beginStop("signal " + unix.SignalName(sig))
			}
		case <-r.kill:
			r.log.Warn("the server did not exit in time: sending SIGKILL", "stop_timeout", r.flags.stopTimeout)
			r.signal(syscall.SIGKILL)
			r.kill = nil
		case m, ok := <-msgs:
			if !ok {
				msgs = nil
				continue
			}
			r.notified(m)
		case <-readyTCP:
			r.markReady("tcp " + r.flags.readyTCP)
		case <-recheck:
			err := r.recheck()
			switch {
			case errors.Is(err, interlock.ErrLost):
				r.log.Error("the data directory interlock is lost: "+err.Error(), "on_lost", r.flags.onLost)
				if r.flags.onLost == "shutdown" && !r.stopAsked {
					r.signal(syscall.SIGTERM)
					r.signal(syscall.SIGCONT)
					r.beginStop("interlock lost")
				}
			case err != nil:
				r.log.Error("cannot write the heartbeat", "err", err)
			}
		}
	}
}

// stallLimit is how long a recheck may take before the storage counts as
// gone: twice the interval (the heartbeat is then three intervals old, the
// least a starter on another host watches it before taking over), and never
// less than stallFloor, so that a slow fsync on a busy disk is not a loss.
func (r *runner) stallLimit() time.Duration { return max(2*r.opts.Recheck, stallFloor) }

const stallFloor = 5 * time.Second

// recheck runs the interlock's Check and writes the heartbeat. Both touch the
// storage, which on a hard NFS mount blocks for as long as the server does
// not answer, and this goroutine with it. A watchdog applies the lost-lock
// action from the side when they take longer than stallLimit: the server
// must not work on while another host may take over. The main loop learns
// of it when the storage answers again.
func (r *runner) recheck() error {
	done := make(chan struct{})
	var fired atomic.Bool
	go r.watchdog(done, &fired)
	err := r.lock.Check()
	if err == nil {
		err = r.lock.Heartbeat()
	}
	close(done)
	if err == nil && fired.Load() {
		err = fmt.Errorf("%w: the recheck took longer than %v", interlock.ErrLost, r.stallLimit())
	}
	return err
}

// watchdog waits for done; if it does not come within stallLimit, it says
// so, and with --on-lost shutdown stops the server itself: SIGTERM, and
// SIGKILL after --stop-timeout unless the recheck returns first (the main
// loop then takes over the stop).
func (r *runner) watchdog(done <-chan struct{}, fired *atomic.Bool) {
	limit := r.stallLimit()
	select {
	case <-done:
		return
	case <-time.After(limit):
	}
	fired.Store(true)
	r.log.Error(fmt.Sprintf("the data directory interlock is lost: the recheck has not returned for %v: the storage does not answer, and another host may take over", limit),
		"on_lost", r.flags.onLost)
	if r.flags.onLost != "shutdown" {
		return
	}
	r.log.Info("stopping the server", "reason", "storage stalled", "stop_timeout", r.flags.stopTimeout)
	r.signal(syscall.SIGTERM)
	r.signal(syscall.SIGCONT)
	select {
	case <-done:
	case <-time.After(r.flags.stopTimeout):
		r.log.Warn("the server did not exit in time: sending SIGKILL", "stop_timeout", r.flags.stopTimeout)
		r.signal(syscall.SIGKILL)
	}
}

// signal passes s to the server, or to its process group.
func (r *runner) signal(s syscall.Signal) {
	target := r.child.Pid
	if r.flags.signalGroup {
		target = -target
	}
	if err := syscall.Kill(target, s); err != nil && err != syscall.ESRCH {
		r.log.Error("cannot signal the server", "pid", target, "signal", unix.SignalName(s), "err", err)
	}
}

// beginStop records that the server is being stopped, once, and arms the
// timer after which it gets SIGKILL. Later requests change nothing: the first
// timer stands.
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
	if err := r.lock.Update(func(p *pidfile.Record) { p.Status = s }); err != nil {
		r.log.Error("cannot update the pidfile status", "status", s, "err", err)
	}
}

func (r *runner) markReady(via string) {
	if r.ready || r.stopping {
		return
	}
	r.ready = true
	r.setStatus(pidfile.Ready)
	r.log.Info("the server is ready", "via", via)
	r.upstreamSend(notify.Field{Key: "READY", Value: "1"})
}

// notified handles a datagram from the server's NOTIFY_SOCKET.
func (r *runner) notified(m notify.Message) {
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

func (r *runner) exitStatus(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		r.log.Info("the server exited", "pid", r.child.Pid, "status", ws.ExitStatus())
		return ws.ExitStatus()
	case ws.Signaled():
		r.log.Info("the server was killed by a signal", "pid", r.child.Pid, "signal", unix.SignalName(ws.Signal()))
		return exitSignalBase + int(ws.Signal())
	}
	return exitInternal
}

// finish releases the interlock and returns code. Processes of the server's
// tree that still share the locked descriptor keep the lock; they are named,
// since the next start will refuse until they are gone.
func (r *runner) finish(code int) int {
	dev, ino := r.lock.File().ID()
	if err := r.lock.Release(); err != nil {
		r.log.Error("release incomplete", "err", err)
		if code == 0 {
			code = exitInternal
		}
	}
	if hs, err := proc.LockHolders(dev, ino); err == nil && len(hs) > 0 {
		var b strings.Builder
		for _, pid := range hs {
			fmt.Fprintf(&b, "%d (%s) ", pid, proc.Cmdline(pid))
		}
		r.log.Warn("released, but processes of the server still hold the data directory", "pids", strings.TrimSpace(b.String()))
		return code
	}
	r.log.Info("released the data directory")
	return code
}

// reap waits for the server to exit and sends its status. As PID 1 it reaps
// every child the kernel hands it (orphans reparented to it), as an init
// must, so none is left a zombie.
func reap(child int, exited chan<- unix.WaitStatus) {
	wpid := child
	if os.Getpid() == 1 {
		wpid = -1
	}
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(wpid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		if pid == child && (ws.Exited() || ws.Signaled()) {
			exited <- ws
			if wpid != -1 {
				return
			}
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
