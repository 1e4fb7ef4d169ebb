package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/pidfile"
)

// report is what check and status say about one data directory, as a line
// and as JSON.
type report struct {
	Datadir  string `json:"datadir"`
	State    string `json:"state"` // free, stale, held, orphans, invalid
	PID      int    `json:"pid,omitempty"`
	ChildPID int    `json:"child_pid,omitempty"` // the command run started
	MainPID  int    `json:"main_pid,omitempty"`  // the server's main process, while there is one
	Host     string `json:"host,omitempty"`
	Status   string `json:"status,omitempty"`
	Started  string `json:"started,omitempty"`
	Method   string `json:"lock_method,omitempty"`
	ShmKey   string `json:"shm_key,omitempty"`
	ShmID    *int   `json:"shm_id,omitempty"`
	Holders  []int  `json:"holders,omitempty"`
	Orphans  []int  `json:"orphans"`
	Reason   string `json:"reason"`
	// Filesystem is the kind of filesystem under the directory (local,
	// nfs, cifs, fuse, ...); TakeoverWatch, in seconds, how long a start
	// would watch another host's heartbeat first.
	Filesystem    string  `json:"filesystem,omitempty"`
	TakeoverWatch float64 `json:"takeover_watch_s,omitempty"`
	// FencingToken is the local holder's (run --etcd); Lease what etcd
	// says about the lease key (--etcd).
	FencingToken int64        `json:"fencing_token,omitempty"`
	Lease        *leaseReport `json:"lease,omitempty"`

	rep *interlock.Report
}

// inspect reports on dir without taking anything.
func inspect(dir string, opts interlock.Options) *report {
	rep, err := interlock.Inspect(dir, opts)
	return newReport(dir, rep, err)
}

func newReport(dir string, rep *interlock.Report, err error) *report {
	r := &report{Datadir: dir, Orphans: []int{}}
	if err != nil {
		r.State, r.Reason = "invalid", err.Error()
		return r
	}
	r.rep, r.Datadir, r.State, r.Reason, r.Holders = rep, rep.Dir, string(rep.State), rep.Message(), rep.Holders
	r.Filesystem, r.TakeoverWatch = rep.Filesystem.Kind(), rep.TakeoverWatch.Seconds()
	if rec := rep.Record; rec != nil {
		r.PID, r.Host, r.Status, r.Method = rec.PID, rec.Hostname, string(rec.Status), rec.LockMethod.String()
		r.Started = rec.StartTime.Format(time.RFC3339)
		r.ShmKey, r.ShmID = pidfile.FormatKey(rec.ShmKey), &rec.ShmID
		r.ChildPID, _ = strconv.Atoi(rec.Extra[childPIDKey])
		r.MainPID, _ = strconv.Atoi(rec.Extra[mainPIDKey])
		r.FencingToken, _ = strconv.ParseInt(rec.Extra[fencingTokenField], 10, 64)
	}
	var oe *interlock.OrphansError
	if errors.As(rep.Err, &oe) {
		r.Orphans = oe.PIDs()
	}
	return r
}

func writeJSON(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s\n", b)
}

var checkDoc = doc{
	name:     "check",
	line:     "check -D DIR [-D DIR...] [--json]",
	summary:  "is it safe to start here now? (for boot scripts)",
	synopsis: []string{"check -D DIR [-D DIR...] [--json]"},
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

// inspectFlags are the flags of check and status besides the global ones.
type inspectFlags struct {
	asJSON bool
	lease  leaseFlags
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
	var lr *leaseReport
	if withLease {
		lr = f.lease.inspectLease()
	}
	worst := 0
	// One pass over /proc serves every directory.
	for i, in := range interlock.InspectAll(g.dirs, g.opts) {
		r := newReport(g.dirs[i], in.Report, in.Err)
		if lr != nil {
			r.addLease(lr)
		}
		code := map[string]int{"free": exitcode.CheckFree, "stale": exitcode.CheckFree, "held": exitcode.CheckHeld,
			"orphans": exitcode.CheckOrphans, "invalid": exitcode.CheckInvalid}[r.State]
		worst = max(worst, code)
		if f.asJSON {
			writeJSON(stdout, r)
		} else {
			fmt.Fprintf(stdout, "%s: %s\n", r.State, r.Reason)
		}
	}
	return worst
}

// LSB status codes.
const (
	lsbRunning     = exitcode.StatusRunning
	lsbDeadPidfile = exitcode.StatusDead
	lsbStopped     = exitcode.StatusNotRunning
	lsbUnknown     = exitcode.StatusUnknown
)

var statusDoc = doc{
	name:     "status",
	line:     "status -D DIR [--json]",
	summary:  "LSB status: 0 running, 1 dead with pidfile, 3 stopped, 4 unknown",
	synopsis: []string{"status -D DIR [--json]"},
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
			return lsbUnknown
		}
		return exitFor(err)
	}
	if len(rest) > 0 {
		usageError(stderr, "status", "unexpected argument %q", rest[0])
		return lsbUnknown
	}
	withLease, err := f.lease.settle(fs)
	if err != nil {
		usageError(stderr, "status", "%v", err)
		return lsbUnknown
	}
	// status names every holder: the wrapper and the server sharing its
	// descriptor.
	g.opts.ListHolders = true
	r := inspect(g.dirs[0], g.opts)
	if withLease {
		r.addLease(f.lease.inspectLease())
	}
	code := map[string]int{"held": lsbRunning, "stale": lsbDeadPidfile, "orphans": lsbDeadPidfile,
		"free": lsbStopped, "invalid": lsbUnknown}[r.State]
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
