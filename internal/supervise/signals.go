package supervise

import (
	"context"
	"os"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
)

// Forwarded are the signals a supervisor acts on: give Run's Signals
// these (signal.Notify).
var Forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// Interruptible runs f, an acquisition before the server starts, while
// watching sigs (Forwarded): SIGTERM or SIGINT cancels f's context, and is
// returned; the other signals are kept in early, for Run to pass to the
// server once it is ready (Supervisor.Early).
func Interruptible(sigs <-chan os.Signal, early *[]syscall.Signal, f func(context.Context) error) (stop syscall.Signal, err error) {
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

// forward passes a signal on: to the main process (and its process group,
// with --signal-group), or, with no main process, to each process dirlockd
// is the parent of.
func (s *Supervisor) forward(sig syscall.Signal) {
	t := s.pinTree()
	defer t.Close()
	if s.targets(t, false).Signal(unix.Signal(sig)) == 0 {
		s.Log.Warn("no process of the server's tree got the signal", "signal", unix.SignalName(sig))
	}
}

// targets picks from the tree t who gets a signal. Passed on (stopping
// false): the main process, with --signal-group the rest of its process
// group; with no main process, dirlockd's own children. Stopping: as
// --kill-mode says, every process of the tree (control-group) or the main
// process alone (mixed, process); with no main process, everyone.
func (s *Supervisor) targets(t proc.Tree, stopping bool) proc.Tree {
	if s.main == nil {
		if stopping {
			return t
		}
		return slices.DeleteFunc(slices.Clone(t), func(m proc.Pinned) bool { return m.Parent != os.Getpid() })
	}
	main := *s.main
	if stopping && s.KillMode == ControlGroup {
		return t
	}
	out := proc.Tree{main}
	for _, m := range t {
		if m.PID != main.PID && s.SignalGroup && m.PGID == main.PGID {
			out = append(out, m)
		}
	}
	return out
}

// passEarly passes on the signals that arrived while dirlockd was still
// acquiring, once the server is ready: only a server that said so (READY=1,
// or its port open) is known to have set up its handlers, and SIGHUP's
// default action would kill one that has not. Without a readiness protocol
// there is no such moment, and the signals are dropped, with a log line: a
// server that has just started has read its configuration and opened its
// logs afresh anyway, which is what a reload or a reopen asks.
func (s *Supervisor) passEarly(ready bool) {
	for _, sig := range s.early {
		if !ready {
			s.Log.Warn("dropped a signal received while acquiring: the server has no readiness protocol (--ready-notify, --ready-tcp), so there is no moment it is known to handle it", "signal", unix.SignalName(sig))
			continue
		}
		s.Log.Info("passing on a signal received while acquiring", "signal", unix.SignalName(sig))
		s.forward(sig)
	}
	s.early = nil
}
