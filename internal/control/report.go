package control

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/printable"
	"github.com/dirlockd/dirlockd/internal/supervise"
	"github.com/dirlockd/dirlockd/pidfile"
)

// A Report is what dirlockd check and status say about one data
// directory: its fields are their --json, and WriteStatus status's text.
type Report struct {
	Datadir string `json:"datadir"`
	State   string `json:"state"` // free, stale, held, orphans, invalid
	// Service is what status says of the server, for monitoring: running,
	// stopping, unsupervised, survivors, dead, stopped or unknown
	// (SetService).
	Service  string `json:"service"`
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
	// FencingToken is the local holder's (run --etcd).
	FencingToken int64 `json:"fencing_token,omitempty"`

	rep *interlock.Report
}

// NewReport makes the report of dir from what interlock.Inspect (or
// InspectAll) said of it: rep, or the error that kept it from saying.
func NewReport(dir string, rep *interlock.Report, err error) *Report {
	r := &Report{Datadir: dir, Orphans: []int{}}
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
		r.ChildPID, _ = strconv.Atoi(rec.Extra[supervise.ChildPIDKey])
		r.MainPID, _ = strconv.Atoi(rec.Extra[supervise.MainPIDKey])
		r.FencingToken, _ = strconv.ParseInt(rec.Extra[lease.TokenField], 10, 64)
	}
	var oe *interlock.OrphansError
	if errors.As(rep.Err, &oe) {
		r.Orphans = oe.PIDs()
	}
	r.SetService()
	return r
}

// The states of the server that status reports (docs/cli.md).
const (
	ServiceRunning      = "running"      // held by a live dirlockd run (or holder)
	ServiceStopping     = "stopping"     // held, and the holder is stopping the server
	ServiceUnsupervised = "unsupervised" // the holder is dead, the recorded main process lives on
	ServiceSurvivors    = "survivors"    // the holder is dead, other processes of it survive
	ServiceDead         = "dead"         // nobody is left, but the holder did not shut down cleanly
	ServiceStopped      = "stopped"      // nobody is left, and the last holder shut down cleanly (or none ever ran)
	ServiceUnknown      = "unknown"      // the directory cannot be inspected
)

// statusExit is status's exit status (an LSB status code) for each state.
var statusExit = map[string]int{
	ServiceRunning: exitcode.StatusRunning, ServiceStopping: exitcode.StatusStopping,
	ServiceUnsupervised: exitcode.StatusUnsupervised, ServiceSurvivors: exitcode.StatusDead,
	ServiceDead: exitcode.StatusDead, ServiceStopped: exitcode.StatusNotRunning, ServiceUnknown: exitcode.StatusUnknown,
}

// checkExit is check's exit status for each State.
var checkExit = map[string]int{"free": exitcode.CheckFree, "stale": exitcode.CheckFree, "held": exitcode.CheckHeld,
	"orphans": exitcode.CheckOrphans, "invalid": exitcode.CheckInvalid}

// SetService settles Service from the other fields; call it again after
// changing State (a lease held elsewhere makes a free directory held).
func (r *Report) SetService() {
	switch r.State {
	case "held":
		r.Service = ServiceRunning
		if r.Status == string(pidfile.Stopping) {
			r.Service = ServiceStopping
		}
	case "orphans":
		r.Service = ServiceSurvivors
		if r.MainPID > 0 && slices.Contains(r.Orphans, r.MainPID) {
			r.Service = ServiceUnsupervised
		}
	case "stale":
		r.Service = ServiceDead
	case "free":
		r.Service = ServiceStopped
	default:
		r.Service = ServiceUnknown
	}
}

// StatusExit is dirlockd status's exit status for the report: an LSB
// status code.
func (r *Report) StatusExit() int { return statusExit[r.Service] }

// CheckExit is dirlockd check's exit status for the report.
func (r *Report) CheckExit() int { return checkExit[r.State] }

// HeldHere reports whether the directory's own lock is held (rather than
// only a lease on it, by a holder elsewhere).
func (r *Report) HeldHere() bool { return r.rep != nil && r.rep.State == interlock.Held }

// WriteStatus writes what dirlockd status says of the directory, its
// server's state first, for a human: for a directory held here, the
// holder's record (PID, main process, host, status, uptime, lock method,
// segment). It reports whether it wrote a record, which the caller may
// follow with lines of its own. A directory held elsewhere (not HeldHere)
// is the caller's to describe.
func (r *Report) WriteStatus(w io.Writer) (record bool) {
	switch {
	case r.Service == ServiceUnsupervised:
		printable.Fprintf(w, "running unsupervised: %s\n  dirlockd run (PID %d) is dead; the server's main process %d runs on\n  stop it with: dirlockd stop -D %s\n", r.Datadir, r.PID, r.MainPID, r.Datadir)
		return false
	case r.Service == ServiceSurvivors:
		printable.Fprintf(w, "dead with survivors: %s\n  %s\n  stop them with: dirlockd stop -D %s --survivors\n", r.Datadir, r.Reason, r.Datadir)
		return false
	case r.State != "held":
		printable.Fprintf(w, "%s: %s\n", r.State, r.Reason)
		return false
	case r.rep == nil || r.rep.Record == nil:
		// The lock is held, but its holder has written nothing: a
		// start between its lock and its record, or a program that is
		// not dirlockd holding the pidfile. There is no PID, host or
		// status to print, only who holds the lock, which the reason
		// says.
		printable.Fprintf(w, "running: %s\n  no record: %s\n", r.Datadir, r.Reason)
		return false
	}
	up := time.Since(r.rep.Record.StartTime).Round(time.Second).String()
	main := "none (the command has exited, and no one process of its tree took over)"
	switch {
	case r.MainPID > 0 && r.MainPID == r.ChildPID:
		main = strconv.Itoa(r.MainPID)
	case r.MainPID > 0:
		main = fmt.Sprintf("%d (command pid %d)", r.MainPID, r.ChildPID)
	case r.ChildPID == 0:
		main = "none yet"
	}
	shmID := -1
	if r.ShmID != nil {
		shmID = *r.ShmID
	}
	printable.Fprintf(w, "%s: %s\n  pid %d, main pid %s, host %s\n  status %s, up %s (since %s)\n  lock %s, shm key %s id %d\n",
		r.Service, r.Datadir, r.PID, main, r.Host, r.Status, up, r.Started, r.Method, r.ShmKey, shmID)
	return true
}
