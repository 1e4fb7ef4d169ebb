package main

import (
	"io"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/control"
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
	return controlExit[control.Reload(g.log, g.dirs[0], g.opts)]
}
