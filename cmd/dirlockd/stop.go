package main

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

var stopDoc = doc{
	name:     "stop",
	summary:  "stop the holder, proven by the kernel, and wait",
	synopsis: []string{"stop -D DIR [--signal SIG] [--timeout D] [--kill-after D]"},
	brief: `Stop the server holding the data directory and wait until the lock is free.
Only a holder the kernel proves is signalled, through a pidfd. Exit status:
0 free; 1 still held after --timeout, holder not provable, or signal failed;
3 invalid data directory or pidfile; 64 usage.`,
	about: `Stop the server holding the data directory and wait until the lock is free.

The signal goes only to a holder proven by the kernel: the lock is held, the
recorded PID is alive, holds the lock itself and has the recorded start time.
It is sent through a pidfd, so a PID recycled in between cannot be hit. A
free or stale directory is reported and nothing is signalled; neither are
orphans of a dead holder, which the record does not name.

Exit status: 0 the directory is free (stopped, or was not running); 1 still
held after --timeout, the holder cannot be proven (orphans, another host or
PID namespace), or the signal failed; 3 invalid data directory or pidfile;
64 usage (also --kill-after not shorter than --timeout).`,
	examples: `  dirlockd stop -D /var/lib/redis
  dirlockd stop -D /var/lib/redis --signal INT --timeout 2m --kill-after 90s
`,
}

type stopFlags struct {
	signal             string
	timeout, killAfter time.Duration
}

// signalNames are the signals stop --signal completes to; any other name or
// number is accepted too.
var signalNames = []string{"TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2"}

func stopFlagSet(g *globals, f *stopFlags, stderr io.Writer) *pflag.FlagSet {
	fs := command(&stopDoc, g, stderr)
	fs.StringVar(&f.signal, "signal", "TERM", "signal name or number")
	detail(fs, "signal", "TERM, INT, QUIT, HUP, KILL, USR1, USR2 or a number.")
	fs.DurationVar(&f.timeout, "timeout", 60*time.Second, "how long to wait for the release")
	fs.DurationVar(&f.killAfter, "kill-after", 0, "then SIGKILL the proven holders (0: never)")
	detail(fs, "kill-after", "If the directory is still held this long after the signal, every process proven to hold the lock gets SIGKILL; must be shorter than --timeout.")
	completeValues(fs, "signal", signalNames...)
	return fs
}

func cmdStop(args []string, stdout, stderr io.Writer) int {
	var g globals
	var f stopFlags
	fs := stopFlagSet(&g, &f, stderr)
	rest, err := g.parse(fs, args, stdout, stderr)
	if err != nil {
		return exitFor(err)
	}
	usageErr := func(format string, a ...any) int { return usageError(stderr, "stop", format, a...) }
	sig, err := parseSignal(f.signal)
	switch {
	case err != nil:
		return usageErr("--signal: %v", err)
	case len(rest) > 0:
		return usageErr("unexpected argument %q", rest[0])
	case f.timeout <= 0:
		return usageErr("--timeout must be positive")
	case f.killAfter < 0:
		return usageErr("--kill-after must not be negative")
	case f.killAfter > 0 && f.killAfter >= f.timeout:
		return usageErr("--kill-after %v must be shorter than --timeout %v, or it never fires", f.killAfter, f.timeout)
	}
	log := g.log.With("datadir", g.dirs[0])
	rep, err := interlock.Inspect(g.dirs[0], g.opts)
	if err != nil {
		log.Error("cannot inspect the data directory", "err", err)
		return 3
	}
	switch rep.State {
	case interlock.Free:
		log.Info("not running: nothing to stop")
		return 0
	case interlock.Stale:
		log.Info("not running; stale record, nothing signalled", "reason", rep.Message())
		return 0
	case interlock.Orphaned:
		log.Error("the recorded holder is dead; refusing to signal processes it did not record: stop them yourself", "reason", rep.Message())
		return 1
	}
	holder, err := rep.PinHolder()
	if err != nil {
		log.Error("holder not proven; nothing signalled", "err", err)
		return 1
	}
	defer holder.Close()
	rec := rep.Record
	if err := holder.Signal(sig); err != nil {
		log.Error("signal failed", "pid", rec.PID, "signal", unix.SignalName(sig), "err", err)
		return 1
	}
	log.Info("signalled the holder; waiting for the lock to be released", "pid", rec.PID, "signal", unix.SignalName(sig), "timeout", f.timeout)
	start := time.Now()
	killed := false
	for {
		r, err := pidfile.Read(rep.Dir, pidfile.Options{Name: g.opts.Pidfile, Method: g.opts.LockMethod})
		if err != nil {
			log.Error("cannot read the pidfile", "err", err)
			return 3
		}
		if r.Outcome != pidfile.Held {
			log.Info("stopped", "pid", rec.PID, "after", time.Since(start).Round(time.Millisecond))
			return 0
		}
		// Held by another instance now: the one signalled has released.
		if r.Record != nil && r.Record.Token != rec.Token {
			log.Error("stopped, but another instance holds the data directory now", "pid", rec.PID, "new_pid", r.Record.PID, "holders", r.Holders)
			return 1
		}
		if f.killAfter > 0 && !killed && time.Since(start) >= f.killAfter {
			killed = true
			killHolders(log, rep, r.Holders)
		}
		if time.Since(start) >= f.timeout {
			log.Error("still held after the timeout", "pid", rec.PID, "holders", r.Holders, "timeout", f.timeout)
			return 1
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killHolders SIGKILLs every process that interlock proves to hold the lock
// and to belong to the instance of rep (its recorded holder, or a process
// carrying its token). holders are listed after rep was made, so they may
// already be those of a next instance that took the lock over.
func killHolders(log *slog.Logger, rep *interlock.Report, holders []int) {
	pinned, others := rep.PinInstance(holders)
	for _, pid := range others {
		log.Warn("holds the lock but is not of the instance signalled: not killed", "pid", pid, "cmdline", proc.Cmdline(pid))
	}
	for _, h := range pinned {
		log.Warn("still held after --kill-after: sending SIGKILL", "pid", h.PID, "cmdline", proc.Cmdline(h.PID))
		h.Signal(unix.SIGKILL)
		h.Close()
	}
}

func parseSignal(s string) (syscall.Signal, error) {
	if v, err := strconv.Atoi(s); err == nil {
		if v <= 0 || v > 64 {
			return 0, fmt.Errorf("signal number %d out of range", v)
		}
		return syscall.Signal(v), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}
