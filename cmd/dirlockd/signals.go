package main

import (
	"context"
	"os"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// forwarded are the signals run passes on to the server.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

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

// targets picks from the tree t who gets a signal. Passed on (stopping
// false): the main process, with --signal-group the rest of its process
// group; with no main process, dirlockd's own children. Stopping: as
// --kill-mode says, every process of the tree (control-group) or the main
// process alone (mixed, process); with no main process, everyone.
func (r *runner) targets(t pinned, stopping bool) pinned {
	if r.main == nil {
		if stopping {
			return t
		}
		return slices.DeleteFunc(slices.Clone(t), func(m member) bool { return m.Parent != os.Getpid() })
	}
	main := *r.main
	if stopping && r.flags.killMode == killControlGroup {
		return t
	}
	out := pinned{main}
	for _, m := range t {
		if m.PID != main.PID && r.flags.signalGroup && m.PGID == main.PGID {
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
