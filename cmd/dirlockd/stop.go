package main

import (
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/cli"
	"github.com/dirlockd/dirlockd/internal/control"
	"github.com/dirlockd/dirlockd/internal/supervise"
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
	sig, err := supervise.ParseSignal(f.signal)
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
	if !fs.Changed("signal") {
		sig = 0 // SIGTERM to a live holder, the recorded stop signal to survivors
	}
	s := control.Stop{Options: g.opts, Log: g.log, Signal: sig, Survivors: f.survivors, Timeout: f.timeout, KillAfter: f.killAfter}
	return controlExit[s.Run(g.dirs[0])]
}

// controlExit is the exit status of stop and reload for each outcome.
var controlExit = map[control.Outcome]int{control.Done: 0, control.Failed: 1, control.Unreadable: 3, control.NotRunning: reloadNotRunning}
