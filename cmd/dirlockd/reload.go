package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/supervise"
	"github.com/dirlockd/dirlockd/internal/users"
)

var reloadDoc = doc{
	name:     "reload",
	summary:  "ask the server to reload its configuration",
	synopsis: []string{"reload -D DIR"},
	brief: `Ask the server holding the data directory to reload its configuration: the
proven holder, dirlockd run, gets SIGHUP and sends the main process its
--reload-signal. Does not wait. Exit status: 0 sent; 1 not provable, not
allowed or failed; 3 invalid; 7 not running; 64 usage.`,
	about: `Ask the server holding the data directory to reload its configuration, as
systemd's ExecReload= and an init script's reload action do: the proven
holder, dirlockd run, gets SIGHUP and sends the server's main process the
signal run was started with (--reload-signal, SIGHUP unless told otherwise;
recorded in the pidfile). When dirlockd run is dead and the recorded main
process runs on (status: unsupervised), that process, pinned by a pidfd and
proven a survivor of this directory, gets the recorded signal directly.
reload does not wait: the server reloads in its own time (PostgreSQL logs
"received SIGHUP, reloading configuration files").

Only root and the user the holder runs as (the pidfile's owner) may reload.

Exit status: 0 the signal was sent; 1 the holder or main process cannot be
proven, not allowed, or the signal failed; 3 invalid data directory or
pidfile; 7 not running (LSB's "program is not running"); 64 usage.`,
	examples: `  dirlockd reload -D /var/lib/postgresql/15/main
`,
}

// reloadNotRunning is reload's status when there is nothing to reload:
// LSB's "program is not running" for an init script's actions.
const reloadNotRunning = 7

func reloadFlagSet(g *globals, stderr io.Writer) *pflag.FlagSet {
	return command(&reloadDoc, g, stderr)
}

func cmdReload(args []string, stdout, stderr io.Writer) int {
	var g globals
	fs := reloadFlagSet(&g, stderr)
	rest, err := g.parse(fs, args, stdout, stderr)
	if err != nil {
		return exitFor(err)
	}
	if len(rest) > 0 {
		return usageError(stderr, "reload", "unexpected argument %q", rest[0])
	}
	log := g.log.With("datadir", g.dirs[0])
	rep, err := interlock.Inspect(g.dirs[0], g.opts)
	if err != nil {
		log.Error("cannot inspect the data directory", "err", err)
		return 3
	}
	if rep.State == interlock.Free || rep.State == interlock.Stale {
		log.Error("not running: nothing to reload", "reason", rep.Message())
		return reloadNotRunning
	}
	if euid := uint32(os.Geteuid()); !rep.MaySignal(euid) {
		log.Error(fmt.Sprintf("not allowed: only root or %s, the user the holder runs as, may reload it", holderName(rep)), "you", users.Name(euid))
		return 1
	}
	how := recordedSignals(rep.Record)
	if rep.State == interlock.Orphaned {
		return reloadUnsupervised(&g, rep, how)
	}
	holder, err := rep.PinHolder()
	if err != nil {
		log.Error("holder not proven; nothing signalled", "err", err)
		return 1
	}
	defer holder.Close()
	if err := holder.Signal(unix.SIGHUP); err != nil {
		log.Error("signal failed", "pid", holder.PID, "err", err)
		return 1
	}
	log.Info("asked the holder to reload the server", "pid", holder.PID, "main_pid", recordedMainPID(rep.Record), "reload_signal", supervise.SignalName(how.reload))
	return 0
}

// reloadUnsupervised signals the recorded main process of a dead holder,
// if it is a proven survivor.
func reloadUnsupervised(g *globals, rep *interlock.Report, how serverSignals) int {
	log := g.log.With("datadir", rep.Dir)
	mainPID := recordedMainPID(rep.Record)
	pinned, _, err := rep.PinSurvivors()
	if err != nil {
		log.Error("cannot pin the survivors", "err", err)
		return 1
	}
	defer func() {
		for _, p := range pinned {
			p.Close()
		}
	}()
	for _, p := range pinned {
		if p.PID == mainPID && mainPID > 0 {
			if err := p.Signal(how.reload); err != nil {
				log.Error("signal failed", "pid", p.PID, "err", err)
				return 1
			}
			log.Warn("dirlockd run is dead: sent the reload signal to the server's main process directly", "main_pid", mainPID, "signal", supervise.SignalName(how.reload))
			return 0
		}
	}
	log.Error("the holder is dead and its main process is not among the survivors: nothing to reload", "reason", rep.Message(),
		"hint", "stop the survivors: dirlockd stop -D "+rep.Dir+" --survivors")
	return reloadNotRunning
}

// holderName names the user the holder of rep runs as.
func holderName(rep *interlock.Report) string {
	if rep.HolderUID == nil {
		return "the pidfile's owner"
	}
	return users.Name(*rep.HolderUID)
}
