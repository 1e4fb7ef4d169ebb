package main

import (
	"errors"
	"io"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/control"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/printable"
)

var statusDoc = doc{
	name:     "status",
	summary:  "the server's state as an LSB status code (0 running, 3 stopped)",
	synopsis: []string{"status -D DIR [--json]"},
	brief: `Report the state of the server of the data directory, with LSB status codes:
  0 running   150 stopping   151 unsupervised (dirlockd dead, server runs on)
  1 dead: not shut down cleanly, or survivors   3 stopped   4 unknown
--json carries the state as "service".`,
	about: `Report the state of the server of the data directory, with LSB status codes
(as pg_ctl status and start-stop-daemon --status) and two of LSB's
application codes for what LSB has no code for:
  0    running: held by a live instance (PID, main PID, status, uptime, lock
       method, segment)
  150  stopping: held, and the holder is stopping the server
  151  unsupervised: dirlockd run is dead, but the server's recorded main
       process runs on (and holds the directory): "dirlockd stop" stops it
  1    dead: not running, but the holder did not shut down cleanly (the
       pidfile's record says so, or is empty or unreadable), or processes of
       the dead holder survive without its main process ("survivors":
       "dirlockd stop --survivors" stops them)
  3    stopped: not running
  4    unknown: the data directory or pidfile cannot be inspected
--json carries the state as "service": running, stopping, unsupervised,
survivors, dead, stopped or unknown.

With --etcd and --lease-key (docs/lease.md), the lease key held by another
holder is running (0), with its host, PID and fencing token, even when the
local lock is free; etcd unreachable with the local lock free is unknown (4).
--json then carries "lease" as check --json does.`,
	examples: `  dirlockd status -D /var/lib/redis
  dirlockd status -D /var/lib/redis --json | jq .main_pid
`,
}

func statusFlagSet(g *globals, f *inspectFlags, stderr io.Writer) *pflag.FlagSet {
	fs := command(&statusDoc, g, stderr)
	fs.BoolVar(&f.asJSON, "json", false, "print a JSON object")
	addLeaseFlags(fs, &f.lease, leaseInspect)
	return fs
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	var g globals
	var f inspectFlags
	fs := statusFlagSet(&g, &f, stderr)
	rest, err := g.parse(fs, args, stdout, stderr)
	if err != nil {
		if errors.Is(err, errUsage) {
			return exitcode.StatusUnknown
		}
		return exitFor(err)
	}
	if len(rest) > 0 {
		usageError(stderr, "status", "unexpected argument %q", rest[0])
		return exitcode.StatusUnknown
	}
	withLease, err := f.lease.settle(fs)
	if err != nil {
		usageError(stderr, "status", "%v", err)
		return exitcode.StatusUnknown
	}
	// status names every holder: the wrapper and the server sharing its
	// descriptor.
	g.opts.ListHolders = true
	rep, err := interlock.Inspect(g.dirs[0], g.opts)
	r := &report{Report: control.NewReport(g.dirs[0], rep, err)}
	if withLease {
		r.addLease(f.lease.inspectLease())
	}
	r.SetService() // the lease may have changed the state
	code := r.StatusExit()
	if f.asJSON {
		writeJSON(stdout, r)
		return code
	}
	if r.State == "held" && !r.HeldHere() {
		// Held through the lease alone: by a holder on another host.
		l := r.Lease
		printable.Fprintf(stdout, "running: %s\n  held through the lease key %s by PID %d on host %s\n  since %s, fencing token %d\n",
			r.Datadir, l.Key, l.PID, l.Host, l.Since, l.FencingToken)
		return code
	}
	if r.WriteStatus(stdout) && r.Lease != nil {
		l := r.Lease
		printable.Fprintf(stdout, "  lease key %s: %s by PID %d on host %s, fencing token %d\n", l.Key, l.State, l.PID, l.Host, l.FencingToken)
	}
	return code
}
