package main

import (
	"context"
	"errors"
	"log/slog"
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
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/fault"
	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/pidfile"
)

// Record fields run keeps besides the interlock's own.
const (
	childPIDKey = "child_pid" // the command dirlockd started
	mainPIDKey  = "main_pid"  // the server's main process, while there is one
)

// runner is one "dirlockd run": it supervises the server's whole tree (see
// tree.go) and holds the data directory until the last process of it has
// exited. This file has its life from acquiring to the release; the rest
// of it is in files of its own: supervise.go the loop, signals.go the
// signals passed on, shutdown.go the stop sequence, mainprocess.go the
// main process, readiness.go readiness and notifications, exitstatus.go
// run's exit status, runlease.go the etcd lease; interlock.Keeper does
// the storage work (run.go is the command: its help and flags).
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
	keeper *interlock.Keeper // rechecks, heartbeats and record updates, off the loop
	early  []syscall.Signal  // signals received while acquiring, for the server once it is ready
	cmdPID int               // the command dirlockd started

	// main is the server's main process: the one signals go to first and
	// whose exit status run reports. It is the command while it lives (or
	// until --main-pid-file names another), then the only process left
	// under dirlockd, if exactly one is. nil when there is none.
	main     *member
	mainGone chan int // a main process that is not our child has exited
	mainFrom string   // what made it the main process, for logs
	cmdCode  int      // the command's exit status, once it has exited
	mainCode *int     // the last main process's exit status, if it was not the command
	badMain  string   // why --main-pid-file was last refused, to warn once for each reason

	ready     bool
	stopping  bool             // the record says stopping (we, or the server itself, began to stop)
	stopAsked bool             // a stop has begun: the first stop timer stands
	kill      <-chan time.Time // armed by the first stop request: SIGKILL when it fires
	rejects   rejectLog        // notifications from outside the server's tree
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
			return exitcode.SignalBase + int(stopSig)
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
		return r.finish(exitcode.SignalBase + int(stopSig))
	}
	if r.lease != nil {
		name := fenceFileName(r.opts.Pidfile)
		if err := advanceFence(rec.DataDir, name, r.lease.l.Token(), r.lease.l.Key()); err != nil {
			var fb *FenceBackError
			if errors.As(err, &fb) {
				r.log.Error("cannot start: "+err.Error(), "fence_file", fb.Path,
					"hint", "find out why etcd went back; remove the fence file only if no server of the old history can still run")
				return r.finish(exitcode.Invalid)
			}
			r.log.Error("cannot start: " + err.Error())
			if invalidStorage(err) {
				return r.finish(exitcode.Invalid)
			}
			return r.finish(exitcode.Internal)
		}
	}
	if r.keeper, err = r.lock.Keep(interlock.KeepOptions{Log: r.log}); err != nil {
		r.log.Error("cannot keep the data directory", "err", err)
		return r.finish(exitcode.Internal)
	}
	// How the server is stopped and reloaded, for dirlockd stop and
	// reload when dirlockd itself is gone.
	r.keeper.SetExtra(stopSignalKey, signalName(r.flags.stopSig))
	r.keeper.SetExtra(reloadSignalKey, signalName(r.flags.reloadSig))
	r.keeper.SetExtra(killModeKey, string(r.flags.killMode))
	if r.lease != nil {
		r.keeper.SetExtra(leaseKeyField, r.lease.l.Key())
		r.keeper.SetExtra(fencingTokenField, strconv.FormatInt(r.lease.l.Token(), 10))
		r.leaseChanged() // arm the timers before the server starts
	}

	if err := becomeSubreaper(); err != nil {
		r.log.Error("cannot become the reaper of the server's tree", "err", err)
		return r.finish(exitcode.Internal)
	}
	// An abstract socket: nothing on disk that a crash could leave
	// behind, or that a cleaner of /tmp could remove from under a server
	// that runs for months. notified judges every sender.
	nl, err := notify.Listen(notifyAddress())
	if err == nil {
		if err = fault.Fail("notify"); err != nil {
			nl.Close()
		}
	}
	if err != nil {
		r.log.Error("cannot listen for notifications", "err", err)
		return r.finish(exitcode.Internal)
	}
	defer nl.Close()

	if r.lease != nil {
		dl, _ := r.lease.l.Deadline()
		if r.fence, err = startFence(dl - r.lease.timing.margin/2); err != nil {
			r.log.Error("cannot start the fence process", "err", err)
			return r.finish(exitcode.Internal)
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

// childLockFD is the descriptor number of the locked pidfile in the server.
const childLockFD = 3

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
	r.keeper.SetExtra(childPIDKey, strconv.Itoa(r.cmdPID))
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

// finish releases the lease, then the interlock, and returns code. By then
// the server's tree is gone, so the record's "stopped" proves that nobody is
// left.
func (r *runner) finish(code int) int {
	r.rejects.stop()
	if r.keeper != nil {
		r.keeper.Stop()
	}
	if r.fence != nil && !r.fenceBye {
		r.fence.Bye()
	}
	r.releaseLease()
	if err := r.lock.Release(); err != nil {
		r.log.Error("release incomplete", "err", err)
		if code == 0 {
			code = exitcode.Internal
		}
	}
	r.log.Info("released the data directory")
	return code
}
