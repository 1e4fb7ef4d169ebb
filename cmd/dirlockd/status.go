package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
)

var statusDoc = doc{
	name:     "status",
	summary:  "LSB status: 0 running, 1 dead with pidfile, 3 stopped, 4 unknown",
	synopsis: []string{"status -D DIR [--json]"},
	brief: `Report whether a server holds the data directory, with LSB status codes:
  0 running   1 not running, but stale or orphans survive   3 not running
  4 unknown: the data directory or pidfile cannot be inspected`,
	about: `Report whether a server holds the data directory, with LSB status codes (as
pg_ctl status and start-stop-daemon --status):
  0  running: held by a live instance (PID, main PID, status, uptime, lock method, segment)
  1  not running, but the pidfile's record says it did not shut down cleanly,
     or the pidfile is empty or unreadable (stale), or orphaned processes of a
     dead holder survive
  3  not running
  4  unknown: the data directory or pidfile cannot be inspected

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
	r := inspect(g.dirs[0], g.opts)
	if withLease {
		r.addLease(f.lease.inspectLease())
	}
	code := map[string]int{"held": exitcode.StatusRunning, "stale": exitcode.StatusDead, "orphans": exitcode.StatusDead,
		"free": exitcode.StatusNotRunning, "invalid": exitcode.StatusUnknown}[r.State]
	if f.asJSON {
		writeJSON(stdout, r)
		return code
	}
	if r.State != "held" {
		fmt.Fprintf(stdout, "%s: %s\n", r.State, r.Reason)
		return code
	}
	if r.rep == nil || r.rep.State != interlock.Held {
		// Held through the lease alone: by a holder on another host.
		l := r.Lease
		fmt.Fprintf(stdout, "running: %s\n  held through the lease key %s by PID %d on host %s\n  since %s, fencing token %d\n",
			r.Datadir, l.Key, l.PID, l.Host, l.Since, l.FencingToken)
		return code
	}
	up := "?"
	if r.rep.Record != nil {
		up = time.Since(r.rep.Record.StartTime).Round(time.Second).String()
	}
	main := "none (the command has exited, and no one process of its tree took over)"
	switch {
	case r.MainPID > 0 && r.MainPID == r.ChildPID:
		main = strconv.Itoa(r.MainPID)
	case r.MainPID > 0:
		main = fmt.Sprintf("%d (command pid %d)", r.MainPID, r.ChildPID)
	case r.ChildPID == 0:
		main = "none yet"
	}
	fmt.Fprintf(stdout, "running: %s\n  pid %d, main pid %s, host %s\n  status %s, up %s (since %s)\n  lock %s, shm key %s id %d\n",
		r.Datadir, r.PID, main, r.Host, r.Status, up, r.Started, r.Method, r.ShmKey, derefInt(r.ShmID))
	if l := r.Lease; l != nil {
		fmt.Fprintf(stdout, "  lease key %s: %s by PID %d on host %s, fencing token %d\n", l.Key, l.State, l.PID, l.Host, l.FencingToken)
	}
	return code
}

func derefInt(p *int) int {
	if p == nil {
		return -1
	}
	return *p
}
