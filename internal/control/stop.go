package control

import (
	"log/slog"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/supervise"
	"github.com/dirlockd/dirlockd/pidfile"
)

// A Stop stops the server of a data directory and waits until the
// directory is free: dirlockd stop. Set its fields, then call Run.
type Stop struct {
	Options interlock.Options // how the directory is held: pidfile, lock method
	Log     *slog.Logger      // its lines carry the directory as datadir

	// Signal goes to a live holder (dirlockd run, which stops its server
	// as it was told), or to a dead holder's survivors. 0: SIGTERM to a
	// live holder, the recorded stop signal to survivors.
	Signal syscall.Signal
	// Survivors: stop the survivors of a dead holder even when its
	// recorded main process is not among them. Without it, only a server
	// that runs on unsupervised (its main process alive) is stopped.
	Survivors bool
	// Timeout is how long to wait for the directory to be free;
	// KillAfter, if not 0, when to SIGKILL what is left (shorter than
	// Timeout).
	Timeout, KillAfter time.Duration

	log *slog.Logger // Log, with the directory
}

// Run stops the server of dir.
func (s *Stop) Run(dir string) Outcome {
	s.log = s.Log.With("datadir", dir)
	log := s.log
	rep, err := interlock.Inspect(dir, s.Options)
	if err != nil {
		log.Error("cannot inspect the data directory", "err", err)
		return Unreadable
	}
	switch rep.State {
	case interlock.Free:
		log.Info("not running: nothing to stop")
		return Done
	case interlock.Stale:
		log.Info("not running; stale record, nothing signalled", "reason", rep.Message())
		return Done
	}
	if !mayAct(log, rep, "stop") {
		return Failed
	}
	if rep.State == interlock.Orphaned {
		return s.survivors(rep)
	}
	return s.holder(rep)
}

// holder signals the live holder of rep and waits until the lock is
// released, SIGKILLing the proven holders after KillAfter.
func (s *Stop) holder(rep *interlock.Report) Outcome {
	log := s.log
	sig := s.Signal
	if sig == 0 {
		sig = unix.SIGTERM
	}
	holder, err := rep.PinHolder()
	if err != nil {
		log.Error("holder not proven; nothing signalled", "err", err)
		return Failed
	}
	defer holder.Close()
	rec := rep.Record
	if err := holder.Signal(sig); err != nil {
		log.Error("signal failed", "pid", rec.PID, "signal", unix.SignalName(sig), "err", err)
		return Failed
	}
	attrs := []any{"pid", rec.PID, "signal", unix.SignalName(sig), "timeout", s.Timeout}
	if sv, ok := rec.Extra[supervise.StopSignalKey]; ok && sig == unix.SIGTERM {
		attrs = append(attrs, "server_stop_signal", sv, "kill_mode", rec.Extra[supervise.KillModeKey])
	}
	log.Info("signalled the holder; waiting for the lock to be released", attrs...)
	start := time.Now()
	killed := false
	for {
		r, err := pidfile.Read(rep.Dir, pidfile.Options{Name: s.Options.Pidfile, Method: s.Options.LockMethod})
		if err != nil {
			log.Error("cannot read the pidfile", "err", err)
			return Unreadable
		}
		if r.Outcome != pidfile.Held {
			log.Info("stopped", "pid", rec.PID, "after", time.Since(start).Round(time.Millisecond))
			return Done
		}
		// Held by another instance now: the one signalled has released.
		if r.Record != nil && r.Record.Token != rec.Token {
			log.Error("stopped, but another instance holds the data directory now", "pid", rec.PID, "new_pid", r.Record.PID, "holders", r.Holders)
			return Failed
		}
		if s.KillAfter > 0 && !killed && time.Since(start) >= s.KillAfter {
			killed = true
			s.killHolders(rep, r.Holders)
		}
		if time.Since(start) >= s.Timeout {
			log.Error("still held after the timeout", "pid", rec.PID, "holders", r.Holders, "timeout", s.Timeout)
			return Failed
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killHolders SIGKILLs every process that interlock proves to hold the lock
// and to belong to the instance of rep (its recorded holder, or a process
// carrying its token). holders are listed after rep was made, so they may
// already be those of a next instance that took the lock over.
func (s *Stop) killHolders(rep *interlock.Report, holders []int) {
	pinned, others := rep.PinInstance(holders)
	for _, pid := range others {
		s.log.Warn("holds the lock but is not of the instance signalled: not killed", "pid", pid, "cmdline", proc.Cmdline(pid))
	}
	for _, h := range pinned {
		s.log.Warn("still held after --kill-after: sending SIGKILL", "pid", h.PID, "cmdline", proc.Cmdline(h.PID))
		h.Signal(unix.SIGKILL)
		h.Close()
	}
}

// survivors stops the proven survivors of the dead holder of rep: Signal,
// or the recorded stop signal, goes to the recorded main process, and to
// the others as the recorded kill mode says (with mixed and process, they
// get SIGTERM once the main process is gone: no holder is left to stop
// them). Without Survivors it does so only when the record's main process
// is among them: the server runs on unsupervised.
func (s *Stop) survivors(rep *interlock.Report) Outcome {
	log := s.log
	how := supervise.ReadRecord(rep.Record)
	sig := s.Signal
	if sig == 0 {
		sig = how.Stop
	}
	pinned, unproven, err := rep.PinSurvivors()
	if err != nil {
		log.Error("cannot pin the survivors", "err", err)
		return Failed
	}
	defer closeAll(pinned)
	for _, pid := range unproven {
		log.Warn("listed as a survivor but not proven one now: not signalled", "pid", pid, "cmdline", proc.Cmdline(pid))
	}
	var main *interlock.PinnedHolder
	for _, p := range pinned {
		if p.PID == how.MainPID {
			main = p
		}
	}
	dead := deadHolder(rep)
	if !s.Survivors && main == nil {
		log.Error("the recorded holder is dead and its main process is not among the survivors; nothing signalled",
			"holder_pid", dead, "survivors", pinnedPIDs(pinned), "reason", rep.Message(),
			"hint", "stop them with: dirlockd stop -D "+rep.Dir+" --survivors --kill-after 30s")
		return Failed
	}
	if len(pinned) == 0 {
		log.Error("no survivor could be proven now; nothing signalled", "unproven", unproven)
		return Failed
	}
	first := pinned
	if how.KillMode != supervise.ControlGroup && main != nil {
		first = []*interlock.PinnedHolder{main}
	}
	for _, p := range first {
		if err := p.Signal(sig); err != nil {
			log.Warn("signal failed", "pid", p.PID, "err", err)
		}
		p.Signal(unix.SIGCONT)
	}
	log.Info("the holder is dead: signalled its survivors; waiting for them to exit", "holder_pid", dead, "main_pid", how.MainPID,
		"pids", pinnedPIDs(first), "signal", supervise.SignalName(sig), "kill_mode", how.KillMode, "timeout", s.Timeout)
	start := time.Now()
	killed, rest := false, len(first) < len(pinned)
	for {
		r, err := interlock.Inspect(rep.Dir, s.Options)
		if err != nil {
			log.Error("cannot inspect the data directory", "err", err)
			return Unreadable
		}
		if r.State != interlock.Orphaned || r.Record == nil || rep.Record == nil || r.Record.Token != rep.Record.Token {
			log.Info("stopped: no survivor is left", "after", time.Since(start).Round(time.Millisecond), "state", r.State)
			return Done
		}
		if rest && main != nil && main.Signal(0) != nil {
			rest = false
			for _, p := range pinned {
				if p != main {
					p.Signal(unix.SIGTERM)
					p.Signal(unix.SIGCONT)
				}
			}
			log.Info("the main process exited; stopping the survivors left", "pids", pinnedPIDs(pinned))
		}
		if s.KillAfter > 0 && !killed && time.Since(start) >= s.KillAfter {
			killed = true
			now, _, err := r.PinSurvivors()
			if err == nil {
				log.Warn("survivors left after --kill-after: sending SIGKILL", "pids", pinnedPIDs(now))
				for _, p := range now {
					p.Signal(unix.SIGKILL)
					p.Close()
				}
			}
		}
		if time.Since(start) >= s.Timeout {
			hint := "they ignore " + supervise.SignalName(sig) + ": dirlockd stop -D " + rep.Dir + " --survivors --kill-after 10s sends SIGKILL after 10s"
			if s.KillAfter > 0 {
				hint = "SIGKILL did not end them: look for survivors in uninterruptible sleep (ps -o pid,stat,wchan) or of another user"
			}
			log.Error("survivors left after the timeout", "reason", r.Message(), "timeout", s.Timeout, "hint", hint)
			return Failed
		}
		time.Sleep(100 * time.Millisecond)
	}
}
