package main

import (
	"io"
	"net"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/cli"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/supervise"
	"github.com/dirlockd/dirlockd/internal/users"
)

type runFlags struct {
	conflictExit int
	signalGroup  bool
	stopTimeout  time.Duration
	readyNotify  bool
	readyTCP     string
	onLost       string
	mainPIDFile  string
	user         string // --user USER[:GROUP]
	killModeArg  string
	stopSigArg   string
	reloadSigArg string
	lease        leaseFlags // --etcd and the flags that go with it
	withLease    bool       // --etcd given

	// Settled from the arguments above.
	killMode           supervise.KillMode
	stopSig, reloadSig syscall.Signal
}

const runAbout = `Run COMMAND as the one server of the data directory: acquire the interlock,
start COMMAND with the locked pidfile descriptor inherited (so the lock lives as
long as any process of the server's tree keeps it, even if dirlockd dies), pass
signals on, track readiness, recheck the interlock, and release it in order once
the last process of the server's tree has exited. dirlockd's flags end at
COMMAND, the first word that is not one of them (or at --): every word after it
is COMMAND's.

The server's tree is every process descended from dirlockd: dirlockd is a child
subreaper, so a server that forks and exits (pg_ctl start, redis-server
--daemonize yes, an init script) or double-forks with setsid stays in it.
dirlockd holds the directory, and the record says running, until the last of
them has exited; only then is the record marked stopped. The main process is
the one signals go to and whose exit status dirlockd reports: COMMAND while it
lives, then the process named by --main-pid-file, or else, if COMMAND exited 0,
the only process left under dirlockd if exactly one is. A COMMAND that fails
fails the server: what it leaves behind is stopped. When the main process
exits while others of its tree remain, they are stopped too. dirlockd exits
with the main process's status (128+N if killed by signal N), or COMMAND's.

COMMAND's environment gets DIRLOCKD_DATADIR, DIRLOCKD_PIDFILE, DIRLOCKD_LOCK_FD,
DIRLOCKD_SHM_ID, DIRLOCKD_TOKEN, and a NOTIFY_SOCKET of dirlockd's own (an
abstract socket: it leaves nothing on disk): READY=1 marks the pidfile status
ready, STOPPING=1 stopping. Under systemd ($NOTIFY_SOCKET set) the notifications
are forwarded with MAINPID=dirlockd, so Type=notify works. Readiness:
--ready-notify waits for READY=1; --ready-tcp for the port; with neither, the
server counts as ready once started. Any process of the network namespace can
reach the socket: a notification is heard only from dirlockd's user, root, or
a process of the server's tree. The first one ignored is logged; the rest are
counted, and the count logged at most once a minute.

--main-pid-file is the server's word, and the server may run as another user:
it is read as systemd reads PIDFile=. Its path is followed a name at a time and
refused where it passes from a user's file to another user's (a symlink the
server's user made to a file only root may read); it is opened without
blocking and must be a regular file (not a FIFO, not /dev/zero); at most 4 KiB
are read. A refused file is warned about, never with its content.

SIGHUP sends the main process --reload-signal (dirlockd reload sends dirlockd
SIGHUP); SIGQUIT, SIGUSR1 and SIGUSR2 are passed to it (to its process group
too with --signal-group; to each of dirlockd's children when there is no main
process). SIGTERM stops the server with --stop-signal (SIGINT with SIGINT), as
--kill-mode says, with systemd's meaning: control-group (the default) signals
every process of the tree, so that a database under a start script that
ignores SIGTERM (mysqld_safe) gets it itself; mixed the main process only, and
SIGTERM to the rest once it has exited; process the main process only, the
rest left to exit. After --stop-timeout, SIGKILL to every process still in the
tree (process: to the main process). Stop signal, reload signal and kill mode
are recorded in the pidfile, for dirlockd stop and reload to use if dirlockd
dies. --user runs dirlockd and COMMAND as the server's user (root only; the
data directory must be that user's). Signals reach processes through
pidfds, never by a PID that may have been reused. A signal that arrives while
dirlockd is still acquiring is not lost: SIGTERM and SIGINT give up (exit 143
or 130), the others are passed to the server once it is ready by --ready-notify
or --ready-tcp (without either, there is no moment it is known to handle them,
and they are dropped with a warning).

Every --recheck, dirlockd checks that it still holds the directory and writes
a heartbeat through the locked descriptor, on a goroutine of its own so that a
hung storage never delays a signal. A failed check (the pidfile deleted or
replaced, the lock gone), a write the storage refuses (EIO: an NFSv4 lock lost
with its lease), or a storage that does not answer within twice --recheck (at
least 5 s)
counts as a lost interlock: --on-lost shutdown stops the server. A shared
memory segment removed from under a live holder (ipcrm, or systemd-logind's
RemoveIPC=yes) is not a lost interlock: dirlockd creates a new one, records it,
and warns.

On shared storage (NFS, CIFS, FUSE) dirlockd refuses mounts whose locks stay
on this host (NFS nolock or local_lock=, CIFS nobrl; --allow-local-locks if no
other host mounts it), and before taking over from a holder on another host
that did not stop cleanly it watches that holder's heartbeat for
--takeover-after: if it moves, the storage's locks are broken, and dirlockd
refuses (exit 75). See docs/nfs.md.

With --etcd ENDPOINTS --lease-key NAME (docs/lease.md) the directory is held
across hosts by a lease on etcd too, for storage that several hosts mount.
After the local interlock, dirlockd puts NAME (its value: host, PID, boot ID,
data directory, start time) under a new lease in a transaction that succeeds
only if NAME does not exist; only then does COMMAND start, with
DIRLOCKD_FENCING_TOKEN (NAME's create revision: it grows with every new
holder; a storage or server that refuses writes under a lower token is safe
even from a holder that was paused), DIRLOCKD_LEASE_KEY and
DIRLOCKD_LEASE_TTL (seconds). dirlockd renews the lease every TTL/3 and keeps
its own deadline: the send time of the last renewal that succeeded + TTL,
which etcd cannot beat. Without a renewal, the server's tree gets SIGTERM at
deadline - --lease-stop-timeout - TTL/10 and SIGKILL at deadline - TTL/10, so
it is dead before etcd can give NAME to another host; a lease that may have
been lost is never used again. If dirlockd itself is stopped or killed, its
fence process (a child kept out of the server's tree, fed each new deadline
and pidfds of the tree) SIGKILLs the tree at deadline - TTL/20. The fence
file (dirlockd.fence in the directory) keeps the highest token that ran
there: a start with a lower one (etcd restored from an old snapshot) is
refused (78). Once the tree is gone, the lease is revoked, then the local
interlock released. NAME held elsewhere: exit 75 naming its host, PID and
since-when (--wait waits, watching NAME); etcd unreachable: 69, and nothing
is written (--wait waits for it too); a key of another tool, or no
permission on it: 78. On shared storage, a takeover from a holder whose
record names NAME under a token whose lease has ended skips the heartbeat
watch. etcd's client is not in dirlockd: it runs in the etcd agent,
dirlockd-etcd (beside dirlockd, or in ../libexec/dirlockd/; missing: 78),
which renews only when dirlockd asks.

Durations below their floor are usage errors (64): --recheck and
--stop-timeout 100ms, --takeover-after 1s, --lease-stop-timeout and
--etcd-dial-timeout 100ms (0 keeps its meaning where it has one). Paths,
hostnames and command lines in text output and text logs are printed with
their control characters escaped (\n, \x1b).

Exit status when COMMAND cannot be started: 75 data directory held by a live
instance (or --conflict-exit-code), or the lease held by another holder, 76
orphaned processes of a dead holder survive, 78 invalid data directory,
pidfile or configuration (or a full or read-only filesystem, or host-local
locks on shared storage), 69 etcd unavailable (--etcd), 64 usage, 70 internal
error, 127 command not found, 126 command not executable.`

const runExamples = `  dirlockd run -D /var/lib/redis -- redis-server --dir /var/lib/redis
  dirlockd run -D /db --user postgres --stop-signal INT -- postgres -D /db
  dirlockd run -D /srv/my --user mysql -- mysqld_safe --datadir=/srv/my
  dirlockd run -D /srv/app --ready-tcp 127.0.0.1:8080 --wait 30s -- ./server
  dirlockd run -D $PGDATA --main-pid-file $PGDATA/postmaster.pid -- pg_ctl start
  dirlockd run -D /mnt/nfs/app --etcd etcd1:2379 --lease-key /app -- ./server
`

var runDoc = doc{
	name:     "run",
	summary:  "run a server under the interlock",
	synopsis: []string{"run -D DIR [flags] -- COMMAND [ARGS...]"},
	brief: `Run COMMAND as the one server of data directory DIR: take the interlock, start
COMMAND holding it, pass signals on, release it once its whole tree has exited.
Exit: COMMAND's (128+N: signal N); 75 held, 76 orphans, 78 invalid, 69 no etcd`,
	about:    runAbout,
	examples: runExamples,
	exec:     true,
}

func runFlagSet(g *globals, f *runFlags, stderr io.Writer) *pflag.FlagSet {
	fs := command(&runDoc, g, stderr)
	fs.DurationVar(&g.opts.Wait, "wait", 0, "wait this long for a held directory (0: fail)")
	fs.IntVar(&f.conflictExit, "conflict-exit-code", exitcode.Held, "exit status if held")
	cli.Detail(fs, "conflict-exit-code", "When the data directory is held by a live instance; 1 to 255.")
	fs.StringVar(&f.user, "user", "", "run as USER[:GROUP] (root only)")
	cli.Detail(fs, "user", "dirlockd and COMMAND run as USER, with USER's supplementary groups and USER's primary group or GROUP, as setpriv --init-groups and start-stop-daemon --chuid do; the data directory must be USER's.")
	fs.StringVar(&f.stopSigArg, "stop-signal", "TERM", "signal that stops the server")
	cli.Detail(fs, "stop-signal", "As systemd's KillSignal=: INT for PostgreSQL's fast shutdown. Recorded in the pidfile, for dirlockd stop when dirlockd itself is dead.")
	cli.CompleteValues(fs, "stop-signal", signalNames...)
	fs.StringVar(&f.killModeArg, "kill-mode", string(supervise.ControlGroup), "as systemd's KillMode=")
	cli.Detail(fs, "kill-mode", "As systemd's KillMode=: control-group every process of the tree, mixed the main process (SIGTERM to the rest once it has exited), process the main process only. Recorded.")
	cli.CompleteValues(fs, "kill-mode", supervise.KillModes...)
	fs.StringVar(&f.reloadSigArg, "reload-signal", "HUP", "signal for dirlockd reload")
	cli.Detail(fs, "reload-signal", "Sent to the main process by dirlockd reload, or when dirlockd gets SIGHUP.")
	cli.CompleteValues(fs, "reload-signal", signalNames...)
	fs.BoolVar(&f.signalGroup, "signal-group", false, "signal the main process's process group too")
	fs.DurationVar(&f.stopTimeout, "stop-timeout", 60*time.Second, "stop signal to SIGKILL")
	cli.Detail(fs, "stop-timeout", "After a stop begins, how long the server's tree may take to exit before every process left in it (with --kill-mode process, the main process) gets SIGKILL; at least 100ms.")
	fs.StringVar(&f.mainPIDFile, "main-pid-file", "", "where a forking server writes its main PID")
	cli.Detail(fs, "main-pid-file", "As systemd's PIDFile=: the first line of the file names the main process, which signals go to and whose exit status dirlockd reports. Read as systemd reads it: a regular file, 4 KiB at most, never through another user's symlink; a refused file's content is never logged.")
	cli.CompleteFiles(fs, "main-pid-file")
	fs.BoolVar(&f.readyNotify, "ready-notify", false, "ready when COMMAND sends READY=1 (sd_notify)")
	fs.StringVar(&f.readyTCP, "ready-tcp", "", "ready when HOST:PORT accepts a connection")
	fs.DurationVar(&g.opts.Recheck, "recheck", 10*time.Second, "recheck interval (0: never)")
	cli.Detail(fs, "recheck", "How often to recheck the interlock and write a heartbeat; at least 100ms.")
	fs.StringVar(&f.onLost, "on-lost", "shutdown", "shutdown or log if lost")
	cli.Detail(fs, "on-lost", "When a recheck finds the interlock lost, shutdown stops COMMAND as SIGTERM does; log only logs it.")
	cli.CompleteValues(fs, "on-lost", "shutdown", "log")
	fs.DurationVar(&g.opts.TakeoverAfter, "takeover-after", 0, "watch a remote holder's heartbeat this long")
	cli.Detail(fs, "takeover-after", "On shared storage, how long to watch the heartbeat of a holder on another host that did not stop cleanly before taking over; 0 is 3 times the longer of --recheck and that holder's interval, otherwise at least 1s.")
	addLeaseFlags(fs, &f.lease, leaseRun)
	return fs
}

// runFloors are the floors of run's durations (checkFloors): a recheck
// writes to the storage, more often than 10 times a second is a load with
// no gain; a stop needs time to deliver its signal; a takeover watch
// shorter than a second cannot see another host's heartbeat move.
var runFloors = []floor{
	{"wait", 0, "fail at once"},
	{"recheck", 100 * time.Millisecond, "never recheck"},
	{"stop-timeout", 100 * time.Millisecond, ""},
	{"takeover-after", time.Second, "the default"},
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	var g globals
	var f runFlags
	fs := runFlagSet(&g, &f, stderr)
	rest, err := g.parse(fs, args, stdout, stderr)
	if err != nil {
		return exitFor(err)
	}
	f.withLease, err = f.lease.settle(fs)
	if err != nil {
		return usageError(stderr, "run", "%v", err)
	}
	usageErr := func(format string, a ...any) int { return usageError(stderr, "run", format, a...) }
	switch {
	case len(rest) == 0:
		return usageErr("no command: dirlockd run -D DIR [flags] -- COMMAND [ARGS...]")
	case f.conflictExit < 1 || f.conflictExit > 255:
		return usageErr("--conflict-exit-code %d: want 1 to 255", f.conflictExit)
	case f.onLost != "shutdown" && f.onLost != "log":
		return usageErr("--on-lost %q: want shutdown or log", f.onLost)
	}
	if err := checkFloors(fs, runFloors...); err != nil {
		return usageErr("%v", err)
	}
	if f.killMode, err = supervise.ParseKillMode(f.killModeArg); err != nil {
		return usageErr("--kill-mode %v", err)
	}
	if f.stopSig, err = supervise.ParseSignal(f.stopSigArg); err != nil {
		return usageErr("--stop-signal: %v", err)
	}
	if f.reloadSig, err = supervise.ParseSignal(f.reloadSigArg); err != nil {
		return usageErr("--reload-signal: %v", err)
	}
	if f.readyTCP != "" {
		if _, _, err := net.SplitHostPort(f.readyTCP); err != nil {
			return usageErr("--ready-tcp %q: %v", f.readyTCP, err)
		}
	}
	if f.mainPIDFile != "" {
		abs, err := filepath.Abs(f.mainPIDFile)
		if err != nil {
			return usageErr("--main-pid-file %q: %v", f.mainPIDFile, err)
		}
		f.mainPIDFile = abs
	}
	if f.user != "" {
		if err := users.Become(f.user); err != nil {
			g.log.Error("cannot run as --user "+f.user, "err", err)
			return exitcode.Invalid
		}
	}
	return runServer(&f, g.opts, g.dirs[0], rest, g.log)
}
