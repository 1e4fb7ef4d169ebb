package main

import (
	"io"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/control"
	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/printable"
)

var checkDoc = doc{
	name:     "check",
	summary:  "is it safe to start here now? (for boot scripts)",
	synopsis: []string{"check -D DIR [-D DIR...] [--json]"},
	brief: `Say whether it is safe to start a server in each data directory now, without
ever making a concurrent start fail. Exit status, the worst over all DIRs:
  0 free or stale   1 held by a live instance   2 orphans of a dead holder
  3 invalid or inaccessible (or host-local locks on shared storage)   64 usage`,
	about: `Say whether it is safe to start a server in each data directory now. It never
takes the lock in a way that could make a concurrent start fail.

Exit status (the worst over all directories):
  0  free or stale: nobody is left (no pidfile; a clean or an unclean
     release; an empty or unreadable pidfile)
  1  held by a live instance
  2  orphaned processes of a dead holder still hold the directory
  3  invalid or inaccessible data directory or pidfile, or a shared filesystem
     whose locks stay on this host (see --allow-local-locks)
  64 usage error
With --json, one JSON object per directory and line: datadir, state (free,
stale, held, orphans, invalid), pid, host, status, orphans, reason, filesystem,
and more.

With --etcd and --lease-key (docs/lease.md), etcd is asked too: the lease key
held by another holder makes the directory held (exit 1), even when the local
lock is free, since on shared storage only the lease proves who holds it; etcd
unreachable makes a free directory invalid (3). --json then carries "lease":
key, state (free, held, unknown), host, pid, boot_id, datadir, since,
fencing_token, error.`,
	examples: `  dirlockd check -D /var/lib/postgresql/16/main || exit 1
  dirlockd check -D /srv/a -D /srv/b --json
`,
	multiDir: true,
}

func checkFlagSet(g *globals, f *inspectFlags, stderr io.Writer) *pflag.FlagSet {
	fs := command(&checkDoc, g, stderr)
	fs.BoolVar(&f.asJSON, "json", false, "one JSON object per directory and line")
	addLeaseFlags(fs, &f.lease, leaseInspect)
	return fs
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	var g globals
	var f inspectFlags
	fs := checkFlagSet(&g, &f, stderr)
	rest, err := g.parse(fs, args, stdout, stderr)
	if err != nil {
		return exitFor(err)
	}
	if len(rest) > 0 {
		return usageError(stderr, "check", "unexpected argument %q", rest[0])
	}
	withLease, err := f.lease.settle(fs)
	if err != nil {
		return usageError(stderr, "check", "%v", err)
	}
	var lr *lease.Report
	if withLease {
		lr = f.lease.inspectLease()
	}
	worst := 0
	// One pass over /proc serves every directory.
	for i, in := range interlock.InspectAll(g.dirs, g.opts) {
		r := &report{Report: control.NewReport(g.dirs[i], in.Report, in.Err)}
		if lr != nil {
			r.addLease(lr)
		}
		worst = max(worst, r.CheckExit())
		if f.asJSON {
			writeJSON(stdout, r)
		} else {
			printable.Fprintf(stdout, "%s: %s\n", r.State, r.Reason)
		}
	}
	return worst
}
