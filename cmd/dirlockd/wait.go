package main

import (
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/cli"
	"github.com/dirlockd/dirlockd/internal/control"
	"github.com/dirlockd/dirlockd/internal/lease"
)

var waitDoc = doc{
	name:     "wait",
	summary:  "block until the directory is free or its server ready",
	synopsis: []string{"wait -D DIR [--for free|ready] [--timeout D]"},
	brief: `Block until the data directory is free (a stale record counts as free), or
until its holder reports status "ready". Exit status: 0 reached; 1 timed out;
3 invalid data directory or pidfile; 64 usage.`,
	about: `Block until the data directory is free (no holder; a stale record counts as
free), or until its holder reports status "ready".

With --etcd and --lease-key (docs/lease.md), free also needs the lease key
free in etcd, and ready needs it held: once the directory is free (or
ready), wait watches the key in etcd until it is too (one connection for
the whole wait, through the etcd agent dirlockd-etcd), then looks at the
directory again.

Exit status: 0 reached; 1 timed out; 3 invalid data directory or pidfile; 64 usage.`,
	examples: `  dirlockd run -D /srv/redis -- redis-server --supervised systemd &
  dirlockd wait -D /srv/redis --for ready --timeout 30s
  dirlockd stop -D /srv/redis; dirlockd wait -D /srv/redis --for free
`,
}

type waitFlags struct {
	target  string
	timeout time.Duration
	lease   leaseFlags
}

func waitFlagSet(g *globals, f *waitFlags, stderr io.Writer) *pflag.FlagSet {
	fs := command(&waitDoc, g, stderr)
	fs.StringVar(&f.target, "for", "free", "what to wait for: free or ready")
	fs.DurationVar(&f.timeout, "timeout", 0, "give up after this long (0: wait forever)")
	cli.CompleteValues(fs, "for", "free", "ready")
	addLeaseFlags(fs, &f.lease, leaseInspect)
	return fs
}

func cmdWait(args []string, stdout, stderr io.Writer) int {
	var g globals
	var f waitFlags
	fs := waitFlagSet(&g, &f, stderr)
	rest, err := g.parse(fs, args, stdout, stderr)
	if err != nil {
		return exitFor(err)
	}
	if len(rest) > 0 || (f.target != "free" && f.target != "ready") || f.timeout < 0 {
		return usageError(stderr, "wait", "want --for free or --for ready, a non-negative --timeout, and no arguments")
	}
	withLease, err := f.lease.settle(fs)
	if err != nil {
		return usageError(stderr, "wait", "%v", err)
	}
	w := control.Wait{Options: g.opts, Log: g.log, Ready: f.target == "ready", Timeout: f.timeout, Began: time.Now()}
	if withLease {
		lw, err := lease.NewWaiter(f.lease.config())
		if err != nil {
			g.log.Error("cannot wait for the lease: "+err.Error(), "datadir", g.dirs[0])
			return 3
		}
		defer lw.Close()
		w.Lease = lw.Wait
	}
	return controlExit[w.Run(g.dirs[0])]
}
