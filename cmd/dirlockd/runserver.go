package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/fault"
	"github.com/dirlockd/dirlockd/internal/guard"
	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/internal/supervise"
)

// runServer is one "dirlockd run", top to bottom: dial the lease (--etcd),
// acquire the interlock, acquire the lease, supervise the server's tree
// (package supervise) until its last process has exited, and release in
// reverse. The guards are supervise.LocalGuard (the interlock, with
// interlock.Keeper doing its storage work) and lease.Guard (the etcd
// lease); run.go is the command, its help and flags.
func runServer(f *runFlags, opts interlock.Options, dir string, argv []string, log *slog.Logger) int {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return supervise.ExecFailed(log, argv[0], err)
	}
	// A closed log pipe must not kill the wrapper (the server would be
	// left running unsupervised): writes then fail, and that is all.
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, supervise.Forwarded...)
	defer signal.Stop(sigs)
	var early []syscall.Signal // signals received while acquiring, for the server once it is ready

	// Dial the lease before anything is written: etcd out of reach, or
	// the key held, fails here without --wait and leaves nothing but a
	// log line. A takeover on shared storage then asks the lease too.
	var ls *lease.Guard
	if f.withLease {
		if ls, err = lease.Dial(f.lease.config(), opts.Wait != 0, log); err != nil && !waitForEtcd(log, ls, err, opts.Wait, dir) {
			ls.Release()
			return leaseFailed(log.With("datadir", dir), err, f.conflictExit)
		}
		opts.TakeoverProof = ls.Proof
	}

	// Acquire the interlock.
	began := time.Now()
	local := supervise.NewLocalGuard(dir, opts, log)
	stopSig, err := supervise.Interruptible(sigs, &early, local.Acquire)
	if err != nil {
		ls.Release()
		if stopSig != 0 {
			log.Info("gave up acquiring the data directory", "datadir", dir, "signal", supervise.SignalName(stopSig), "err", err)
			return exitcode.SignalBase + int(stopSig)
		}
		return acquireFailed(log, err, dir, f)
	}
	lock := local.Lock()
	rec := lock.Record()
	log = log.With("datadir", rec.DataDir)
	guards := []guard.Guard{local}
	release := func(code int) int {
		for i := len(guards) - 1; i >= 0; i-- {
			if err := guards[i].Release(); err != nil && code == 0 {
				code = exitcode.Internal
			}
		}
		return code
	}

	// Acquire the lease, waiting for the rest of --wait.
	if ls != nil {
		ls.SetLog(log)
		guards = append(guards, ls)
		if stopSig == 0 {
			wait := opts.Wait
			if wait > 0 {
				wait = max(wait-time.Since(began), time.Millisecond)
			}
			stopSig, err = supervise.Interruptible(sigs, &early, func(ctx context.Context) error {
				return ls.Acquire(ctx, rec.DataDir, wait)
			})
			if stopSig == 0 && err != nil {
				return release(leaseFailed(log, err, f.conflictExit))
			}
		}
	}
	if stopSig != 0 {
		log.Info("stopped before the server started", "signal", unix.SignalName(stopSig))
		return release(exitcode.SignalBase + int(stopSig))
	}
	if ls != nil {
		if err := ls.AdvanceTokenFile(rec.DataDir, opts.Pidfile); err != nil {
			return release(startExit(err, 0))
		}
	}

	// Supervise.
	rc, err := local.Keep()
	if err != nil {
		log.Error("cannot keep the data directory", "err", err)
		return release(exitcode.Internal)
	}
	// How the server is stopped and reloaded, for dirlockd stop and
	// reload when dirlockd itself is gone.
	rc.SetExtra(supervise.StopSignalKey, supervise.SignalName(f.stopSig))
	rc.SetExtra(supervise.ReloadSignalKey, supervise.SignalName(f.reloadSig))
	rc.SetExtra(supervise.KillModeKey, string(f.killMode))

	// An abstract socket: nothing on disk that a crash could leave
	// behind, or that a cleaner of /tmp could remove from under a server
	// that runs for months. notified judges every sender.
	nl, err := notify.Listen(supervise.NotifyAddress())
	if err == nil {
		if err = fault.Fail("notify"); err != nil {
			nl.Close()
		}
	}
	if err != nil {
		log.Error("cannot listen for notifications", "err", err)
		return release(exitcode.Internal)
	}
	defer nl.Close()
	if ls != nil {
		if err := ls.StartWatchdog(); err != nil {
			log.Error("cannot start the fence process", "err", err)
			return release(exitcode.Internal)
		}
	}
	s := &supervise.Supervisor{
		Path:         path,
		Args:         argv,
		Env:          childEnv(os.Environ()),
		Files:        []uintptr{lock.File().OS().Fd()}, // supervise.LockFD
		Log:          log,
		Record:       rc,
		Guards:       guards,
		Signals:      sigs,
		Early:        early,
		Notify:       nl,
		Upstream:     os.Getenv("NOTIFY_SOCKET"),
		StopSignal:   f.stopSig,
		ReloadSignal: f.reloadSig,
		StopTimeout:  f.stopTimeout,
		KillMode:     f.killMode,
		SignalGroup:  f.signalGroup,
		OnLost:       f.onLost,
		ReadyTCP:     f.readyTCP,
		ReadyNotify:  f.readyNotify,
		MainPIDFile:  f.mainPIDFile,
	}
	return s.Run() // releases the guards once the tree is gone
}

// leaseFailed logs why the lease cannot be had, with what to do, and
// returns run's status (startExit). log names the data directory.
func leaseFailed(log *slog.Logger, err error, conflictExit int) int {
	var he *lease.HeldError
	var ue *lease.UnavailableError
	switch {
	case errors.As(err, &he):
		h := he.Holder
		log.Error("cannot start: "+err.Error(), "lease_key", he.Key, "holder_host", h.Host, "holder_pid", h.PID,
			"since", h.Started.Format(time.RFC3339), "fencing_token", h.Token,
			"hint", "stop it on "+h.Host+" first, or wait: --wait DURATION")
	case errors.As(err, &ue):
		log.Error("cannot start: "+err.Error(), "hint", etcdHint)
	default:
		log.Error("cannot start: " + err.Error())
	}
	return startExit(err, conflictExit)
}

// etcdHint is what to do about an etcd that does not answer.
const etcdHint = "check --etcd and that a majority of etcd's members is up"

// waitForEtcd reports whether a start with --wait goes on after Dial
// failed with err, and logs it: an etcd without a majority for now (an
// election, a member restarting, the cut that is ending the holder's
// lease) is waited for, as it is once the wait has begun, until the wait
// ends. A standby started a moment before its holder's host is cut off
// must still take over.
func waitForEtcd(log *slog.Logger, ls *lease.Guard, err error, wait time.Duration, dir string) bool {
	var ue *lease.UnavailableError
	if ls == nil || wait == 0 || !errors.As(err, &ue) {
		return false
	}
	log.Warn(err.Error()+"; waiting for it (--wait)", "datadir", dir, "hint", etcdHint)
	return true
}

// childVars are the variables run gives the server; any value the caller's
// environment has for them is replaced.
var childVars = []string{"NOTIFY_SOCKET", "DIRLOCKD_DATADIR", interlock.PidfileEnv, "DIRLOCKD_LOCK_FD", "DIRLOCKD_SHM_ID", interlock.TokenEnv,
	lease.TokenEnv, lease.KeyEnv, lease.TTLEnv}

// childEnv drops from env what the server must get from us, not from our
// caller, and keeps everything else (other DIRLOCKD_ variables included).
func childEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(childVars, k)
	})
}

// acquireFailed logs why the interlock cannot be had, with what to do,
// and returns run's status (startExit).
func acquireFailed(log *slog.Logger, err error, dir string, f *runFlags) int {
	var he *interlock.HeldError
	var oe *interlock.OrphansError
	var be *interlock.BrokenLocksError
	switch {
	case errors.As(err, &be):
		log.Error("cannot start: "+err.Error(), "datadir", be.Dir, "holder_host", be.Record.Hostname, "holder_pid", be.Record.PID,
			"hint", "do not start anything in this directory from this host until every host's mount keeps locks (see docs/nfs.md)")
	case errors.As(err, &he):
		log.Error("cannot start: "+err.Error(), "datadir", he.Dir, "holder_pid", he.PID, "host", he.Host,
			"since", he.Started.Format(time.RFC3339), "holders", he.Holders,
			"hint", "stop it first: dirlockd stop -D "+he.Dir+", or wait: --wait DURATION")
	case errors.As(err, &oe):
		var b strings.Builder
		for i, o := range oe.Orphans {
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "%d (%s)", o.PID, o.Cmdline)
		}
		log.Error("cannot start: "+err.Error(), "datadir", oe.Dir, "orphans", b.String(),
			"hint", "stop the surviving processes of the old server (dirlockd stop -D "+oe.Dir+" --survivors), then start again")
	case invalidStorage(err):
		attrs := []any{"datadir", dir}
		if f.user != "" {
			// The start rule applies to the user dirlockd became.
			attrs = append(attrs, "hint", "with --user "+f.user+", the data directory must belong to that user (the server's), as the server itself needs")
		}
		log.Error("cannot start: "+err.Error(), attrs...)
	default:
		log.Error("cannot start: "+err.Error(), "datadir", dir)
	}
	return startExit(err, f.conflictExit)
}
