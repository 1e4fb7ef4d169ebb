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
	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/internal/supervise"
	"github.com/dirlockd/dirlockd/pidfile"
)

// runServer is one "dirlockd run", top to bottom: dial the lease (--etcd),
// acquire the interlock, acquire the lease, supervise the server's tree
// (package supervise) until its last process has exited, and release in
// reverse. The guards are localguard.go (the interlock, with
// interlock.Keeper doing its storage work) and leaseguard.go (the etcd lease); run.go is the
// command, its help and flags.
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

	var lg *leaseGuard
	if f.withLease {
		var code int
		if lg, code = dialLease(f.lease, &opts, f.conflictExit, dir, log); code != 0 {
			lg.Release()
			return code
		}
	}
	began := time.Now()
	var lock *interlock.Lock
	stopSig, err := interruptible(sigs, &early, func(ctx context.Context) (err error) {
		lock, err = interlock.Acquire(ctx, dir, opts)
		return err
	})
	if err != nil {
		if lg != nil {
			lg.Release()
		}
		if stopSig != 0 {
			log.Info("gave up acquiring the data directory", "datadir", dir, "signal", supervise.SignalName(stopSig), "err", err)
			return exitcode.SignalBase + int(stopSig)
		}
		return acquireFailed(log, err, dir, f)
	}
	rec := lock.Record()
	log = log.With("datadir", rec.DataDir)
	logAcquired(log, lock)
	local := newLocalGuard(lock, log)
	guards := []supervise.Guard{local}
	if lg != nil {
		lg.log = log
		guards = append(guards, lg)
	}
	release := func(code int) int {
		for i := len(guards) - 1; i >= 0; i-- {
			if err := guards[i].Release(); err != nil && code == 0 {
				code = exitcode.Internal
			}
		}
		return code
	}
	if stopSig == 0 && lg != nil {
		var code int
		if stopSig, code = lg.acquire(sigs, &early, rec.DataDir, dir, opts.Wait, began, f.conflictExit); code != 0 {
			return release(code)
		}
	}
	if stopSig != 0 {
		log.Info("stopped before the server started", "signal", unix.SignalName(stopSig))
		return release(exitcode.SignalBase + int(stopSig))
	}
	if lg != nil {
		if code := advanceTokenFile(log, rec.DataDir, opts.Pidfile, lg.Lease()); code != 0 {
			return release(code)
		}
	}
	rc, err := local.start()
	if err != nil {
		log.Error("cannot keep the data directory", "err", err)
		return release(exitcode.Internal)
	}
	// How the server is stopped and reloaded, for dirlockd stop and
	// reload when dirlockd itself is gone.
	rc.SetExtra(stopSignalKey, supervise.SignalName(f.stopSig))
	rc.SetExtra(reloadSignalKey, supervise.SignalName(f.reloadSig))
	rc.SetExtra(killModeKey, string(f.killMode))

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
	if lg != nil {
		w, err := startWatchdog(lg.Guard)
		if err != nil {
			log.Error("cannot start the fence process", "err", err)
			return release(exitcode.Internal)
		}
		log.Debug("started the fence process", "pid", w.PID())
	}
	s := &supervise.Supervisor{
		Path:         path,
		Args:         argv,
		Env:          childEnv(os.Environ()),
		Files:        []uintptr{lock.File().OS().Fd()}, // childLockFD
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
	return s.Run()
}

// logAcquired says what was acquired, and what it took over.
func logAcquired(log *slog.Logger, lock *interlock.Lock) {
	rec := lock.Record()
	log.Info("acquired the data directory", "lock_method", rec.LockMethod, "shm_key", pidfile.FormatKey(rec.ShmKey), "shm_id", rec.ShmID)
	if p := lock.Previous(); p != nil && !p.Clean() {
		log.Warn(p.String())
	}
	if t := lock.Takeover(); t != nil {
		log.Warn(t.String())
	}
	// What the locks are worth when the data directory is on shared
	// storage.
	fs, err := lock.File().Filesystem()
	if err != nil || !fs.Shared() {
		return
	}
	m := lock.File().Method()
	if why := fs.LocalOnly(m); why != "" {
		log.Warn("shared storage with host-local locks, allowed by --allow-local-locks: "+why, "fs", fs.Type, "mount", fs.MountPoint)
		return
	}
	log.Info("shared storage: "+fs.Guarantee(m), "fs", fs.Type, "mount", fs.MountPoint)
}

// advanceTokenFile records the lease's fencing token in the directory's
// token file (the fence file), refusing a token below one that ran here.
func advanceTokenFile(log *slog.Logger, dataDir, pidfileName string, l *lease.Lease) int {
	err := lease.AdvanceTokenFile(dataDir, lease.TokenFileName(pidfileName), l.Token(), l.Key())
	if err == nil {
		return 0
	}
	var tb *lease.TokenBackError
	if errors.As(err, &tb) {
		log.Error("cannot start: "+err.Error(), "fence_file", tb.Path,
			"hint", "find out why etcd went back; remove the fence file only if no server of the old history can still run")
	} else {
		log.Error("cannot start: " + err.Error())
	}
	return startExit(err, 0)
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

// interruptible runs f while watching for signals: SIGTERM or SIGINT
// cancels f's context (and is returned); the other forwarded signals are
// kept in early for the server.
func interruptible(sigs <-chan os.Signal, early *[]syscall.Signal, f func(context.Context) error) (stop syscall.Signal, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	for {
		select {
		case s := <-sigs:
			sig := s.(syscall.Signal)
			if sig != syscall.SIGTERM && sig != syscall.SIGINT {
				*early = append(*early, sig)
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
			"hint", "stop the surviving processes of the old server, then start again")
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
