package supervise

import (
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/pidfile"
)

// stop begins stopping the server with sig: the main process gets it, and so
// does every process outside the main process's own subtree, which the main
// process cannot be expected to stop; with no main process, every process of
// the tree. SIGCONT follows, as systemd sends it: a server stopped by job
// control would never act on the signal otherwise.
func (s *Supervisor) stop(sig syscall.Signal, why string) {
	t := s.pinTree()
	defer t.Close()
	targets := s.targets(t, true)
	s.Log.Debug("sending the stop signal", "signal", SignalName(sig), "kill_mode", s.KillMode, "pids", targets.PIDs())
	targets.Signal(unix.Signal(sig))
	targets.Signal(unix.SIGCONT)
	s.beginStop(why)
}

// beginStop records that the server is being stopped, once, and arms the
// timer after which its tree gets SIGKILL. Later requests change nothing:
// the first timer stands.
func (s *Supervisor) beginStop(why string) {
	if s.stopAsked {
		return
	}
	s.stopAsked = true
	s.Log.Info("stopping the server", "reason", why, "stop_timeout", s.StopTimeout)
	if !s.stopping {
		s.setStatus(pidfile.Stopping)
		s.upstreamSend(notify.Field{Key: "STOPPING", Value: "1"})
	}
	s.kill = s.Clock.After(s.StopTimeout)
}

// lost applies --on-lost to an interlock that is no longer ours.
func (s *Supervisor) lost(reason string) {
	s.Log.Error("the data directory interlock is lost: "+reason, "on_lost", s.OnLost)
	if s.OnLost == "shutdown" && !s.stopAsked {
		s.stop(s.StopSignal, "interlock lost")
	}
}

// killTree is the end of the stop sequence: --stop-timeout after the first
// stop request, every process still in the server's tree gets SIGKILL.
func (s *Supervisor) killTree() {
	s.kill = nil
	if s.KillMode == Process && s.main != nil {
		// The rest of the tree is left alone: dirlockd holds the
		// directory until it has exited on its own.
		s.Log.Warn("the main process did not exit in time: sending it SIGKILL (--kill-mode process: the rest of its tree is left to exit)", "stop_timeout", s.StopTimeout, "pid", s.main.PID)
		s.main.Signal(unix.SIGKILL)
		return
	}
	t := s.pinTree()
	defer t.Close()
	if len(t) == 0 {
		return // gone already; dirlockd is only finishing its release
	}
	s.Log.Warn("the server did not exit in time: sending SIGKILL to its tree", "stop_timeout", s.StopTimeout, "pids", t.PIDs())
	t.Signal(unix.SIGKILL)
}
