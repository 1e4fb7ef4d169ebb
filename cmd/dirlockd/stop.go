package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/cli"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/supervise"
	"github.com/dirlockd/dirlockd/internal/users"
	"github.com/dirlockd/dirlockd/pidfile"
)

var stopDoc = doc{
	name:     "stop",
	summary:  "stop the holder, proven by the kernel, and wait",
	synopsis: []string{"stop -D DIR [--signal SIG] [--timeout D] [--kill-after D]", "stop -D DIR --survivors [--kill-after D]"},
	brief: `Stop the server holding the data directory and wait until the lock is free.
Only a holder the kernel proves is signalled, through a pidfd: dirlockd run
gets SIGTERM and stops its server as it was told (--stop-signal, --kill-mode).
--survivors stops what a dead holder left. Exit status: 0 free; 1 still held
after --timeout, not provable or not allowed; 3 invalid; 64 usage.`,
	about: `Stop the server holding the data directory and wait until the lock is free.

The signal goes only to a holder proven by the kernel: the lock is held, the
recorded PID is alive, holds the lock itself and has the recorded start time.
It is sent through a pidfd, so a PID recycled in between cannot be hit. The
holder is dirlockd run, which gets SIGTERM and sends its server the stop
signal and kill mode it was started with (run --stop-signal, --kill-mode,
recorded in the pidfile); --signal sends another signal to the holder. A free
or stale directory is reported and nothing is signalled.

When dirlockd run died and its server lives on (status says "running
unsupervised"), the record's main process is stopped directly with the
recorded stop signal, and the other survivors as the recorded kill mode says.
Other survivors of a dead holder (no main process among them) are signalled
only with --survivors: each is pinned by a pidfd, then proven again (it holds
the pidfile's lock, or runs as the holder's user or root and carries the dead
holder's DIRLOCKD_TOKEN or this pidfile in its environment, or is attached to
the recorded segment). --kill-after escalates to SIGKILL in both cases.

Only root and the user the holder runs as (the pidfile's owner) may stop it.

Exit status: 0 the directory is free (stopped, or was not running); 1 still
held after --timeout, the holder cannot be proven (another host or PID
namespace), survivors without --survivors, not allowed, or the signal failed;
3 invalid data directory or pidfile; 64 usage (also --kill-after not shorter
than --timeout).`,
	examples: `  dirlockd stop -D /var/lib/redis
  dirlockd stop -D /var/lib/redis --signal INT --timeout 2m --kill-after 90s
  dirlockd stop -D /var/lib/postgresql/15/main --survivors --kill-after 30s
`,
}

type stopFlags struct {
	signal             string
	survivors          bool
	timeout, killAfter time.Duration
}

// signalNames are the signals stop --signal completes to; any other name or
// number is accepted too.
var signalNames = []string{"TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2"}

func stopFlagSet(g *globals, f *stopFlags, stderr io.Writer) *pflag.FlagSet {
	fs := command(&stopDoc, g, stderr)
	fs.StringVar(&f.signal, "signal", "TERM", "signal name or number")
	cli.Detail(fs, "signal", "TERM, INT, QUIT, HUP, KILL, USR1, USR2 or a number. For a dead holder's server or survivors, the default is the --stop-signal run recorded.")
	fs.BoolVar(&f.survivors, "survivors", false, "stop the proven survivors of a dead holder")
	cli.Detail(fs, "survivors", "The holder is dead: signal the processes the witnesses prove to be its own survivors (pinned through pidfds), --kill-after escalating to SIGKILL.")
	fs.DurationVar(&f.timeout, "timeout", 60*time.Second, "how long to wait for the release")
	fs.DurationVar(&f.killAfter, "kill-after", 0, "then SIGKILL the proven holders (0: never)")
	cli.Detail(fs, "kill-after", "If the directory is still held this long after the signal, every process proven to hold the lock gets SIGKILL; must be shorter than --timeout.")
	cli.CompleteValues(fs, "signal", signalNames...)
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
	}
	if euid := uint32(os.Geteuid()); !rep.MaySignal(euid) {
		log.Error(fmt.Sprintf("not allowed: only root or %s, the user the holder runs as, may stop it", holderName(rep)), "you", users.Name(euid))
		return 1
	}
	if rep.State == interlock.Orphaned {
		if !fs.Changed("signal") {
			sig = 0 // the recorded stop signal
		}
		return stopSurvivors(log, rep, g.opts, sig, f)
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
	attrs := []any{"pid", rec.PID, "signal", unix.SignalName(sig), "timeout", f.timeout}
	if s, ok := rec.Extra[stopSignalKey]; ok && sig == unix.SIGTERM {
		attrs = append(attrs, "server_stop_signal", s, "kill_mode", rec.Extra[killModeKey])
	}
	log.Info("signalled the holder; waiting for the lock to be released", attrs...)
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

// stopSurvivors stops the proven survivors of the dead holder of rep: sig,
// or (0) the recorded stop signal, goes to the recorded main process, and to
// the others as the recorded kill mode says (with mixed and process, they
// get SIGTERM once the main process is gone: no holder is left to stop
// them). Without --survivors it does so only when the record's main process
// is among them: the server runs on unsupervised.
func stopSurvivors(log *slog.Logger, rep *interlock.Report, opts interlock.Options, sig syscall.Signal, f stopFlags) int {
	how := recordedSignals(rep.Record)
	if sig == 0 {
		sig = how.stop
	}
	pinned, unproven, err := rep.PinSurvivors()
	if err != nil {
		log.Error("cannot pin the survivors", "err", err)
		return 1
	}
	closeAll := func() {
		for _, p := range pinned {
			p.Close()
		}
	}
	defer closeAll()
	for _, pid := range unproven {
		log.Warn("listed as a survivor but not proven one now: not signalled", "pid", pid, "cmdline", proc.Cmdline(pid))
	}
	mainPID := recordedMainPID(rep.Record)
	var main *interlock.PinnedHolder
	for _, p := range pinned {
		if p.PID == mainPID {
			main = p
		}
	}
	dead := "none"
	if rep.Record != nil {
		dead = strconv.Itoa(rep.Record.PID)
	}
	if !f.survivors && main == nil {
		log.Error("the recorded holder is dead and its main process is not among the survivors; nothing signalled",
			"holder_pid", dead, "survivors", pinnedPIDs(pinned), "reason", rep.Message(),
			"hint", "stop them with: dirlockd stop -D "+rep.Dir+" --survivors --kill-after 30s")
		return 1
	}
	if len(pinned) == 0 {
		log.Error("no survivor could be proven now; nothing signalled", "unproven", unproven)
		return 1
	}
	first := pinned
	if how.mode != supervise.ControlGroup && main != nil {
		first = []*interlock.PinnedHolder{main}
	}
	for _, p := range first {
		if err := p.Signal(sig); err != nil {
			log.Warn("signal failed", "pid", p.PID, "err", err)
		}
		p.Signal(unix.SIGCONT)
	}
	log.Info("the holder is dead: signalled its survivors; waiting for them to exit", "holder_pid", dead, "main_pid", mainPID,
		"pids", pinnedPIDs(first), "signal", supervise.SignalName(sig), "kill_mode", how.mode, "timeout", f.timeout)
	start := time.Now()
	killed, rest := false, len(first) < len(pinned)
	for {
		r, err := interlock.Inspect(rep.Dir, opts)
		if err != nil {
			log.Error("cannot inspect the data directory", "err", err)
			return 3
		}
		if r.State != interlock.Orphaned || r.Record == nil || rep.Record == nil || r.Record.Token != rep.Record.Token {
			log.Info("stopped: no survivor is left", "after", time.Since(start).Round(time.Millisecond), "state", r.State)
			return 0
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
		if f.killAfter > 0 && !killed && time.Since(start) >= f.killAfter {
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
		if time.Since(start) >= f.timeout {
			hint := "they ignore " + supervise.SignalName(sig) + ": dirlockd stop -D " + rep.Dir + " --survivors --kill-after 10s sends SIGKILL after 10s"
			if f.killAfter > 0 {
				hint = "SIGKILL did not end them: look for survivors in uninterruptible sleep (ps -o pid,stat,wchan) or of another user"
			}
			log.Error("survivors left after the timeout", "reason", r.Message(), "timeout", f.timeout, "hint", hint)
			return 1
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pinnedPIDs(ps []*interlock.PinnedHolder) []int {
	out := make([]int, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.PID)
	}
	return out
}

// recordedMainPID is the main process rec names, 0 for none.
func recordedMainPID(rec *pidfile.Record) int {
	if rec == nil {
		return 0
	}
	pid, _ := strconv.Atoi(rec.Extra[supervise.MainPIDKey])
	return pid
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
