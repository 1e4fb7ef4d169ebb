package main

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/pidfile"
)

// stop begins stopping the server with sig: the main process gets it, and so
// does every process outside the main process's own subtree, which the main
// process cannot be expected to stop; with no main process, every process of
// the tree. SIGCONT follows, as systemd sends it: a server stopped by job
// control would never act on the signal otherwise.
func (r *runner) stop(sig syscall.Signal, why string) {
	t := pinTree(r.helpers()...)
	defer t.Close()
	targets := r.targets(t, true)
	r.log.Debug("sending the stop signal", "signal", signalName(sig), "kill_mode", r.flags.killMode, "pids", targets.PIDs())
	targets.Signal(unix.Signal(sig))
	targets.Signal(unix.SIGCONT)
	r.beginStop(why)
}

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

// lost applies --on-lost to an interlock that is no longer ours.
func (r *runner) lost(reason string) {
	r.log.Error("the data directory interlock is lost: "+reason, "on_lost", r.flags.onLost)
	if r.flags.onLost == "shutdown" && !r.stopAsked {
		r.stop(r.flags.stopSig, "interlock lost")
	}
}

// killTree is the end of the stop sequence: --stop-timeout after the first
// stop request, every process still in the server's tree gets SIGKILL.
func (r *runner) killTree() {
	r.kill = nil
	if r.flags.killMode == killProcess && r.main != nil {
		// The rest of the tree is left alone: dirlockd holds the
		// directory until it has exited on its own.
		r.log.Warn("the main process did not exit in time: sending it SIGKILL (--kill-mode process: the rest of its tree is left to exit)", "stop_timeout", r.flags.stopTimeout, "pid", r.main.PID)
		r.main.Signal(unix.SIGKILL)
		return
	}
	t := pinTree(r.helpers()...)
	defer t.Close()
	if len(t) == 0 {
		return // gone already; dirlockd is only finishing its release
	}
	r.log.Warn("the server did not exit in time: sending SIGKILL to its tree", "stop_timeout", r.flags.stopTimeout, "pids", t.PIDs())
	t.Signal(unix.SIGKILL)
}
