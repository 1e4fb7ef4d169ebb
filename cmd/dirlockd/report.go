package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/supervise"
	"github.com/dirlockd/dirlockd/pidfile"
)

// report is what check and status say about one data directory, as a line
// and as JSON.
type report struct {
	Datadir string `json:"datadir"`
	State   string `json:"state"` // free, stale, held, orphans, invalid
	// Service is what status says of the server, for monitoring: running,
	// stopping, unsupervised, survivors, dead, stopped or unknown.
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
		r.ChildPID, _ = strconv.Atoi(rec.Extra[supervise.ChildPIDKey])
		r.MainPID, _ = strconv.Atoi(rec.Extra[supervise.MainPIDKey])
		r.FencingToken, _ = strconv.ParseInt(rec.Extra[lease.TokenField], 10, 64)
	}
	var oe *interlock.OrphansError
	if errors.As(rep.Err, &oe) {
		r.Orphans = oe.PIDs()
	}
	r.Service = r.service()
	return r
}

// The states of the server that status reports (docs/cli.md), each with
// its exit code.
const (
	serviceRunning      = "running"      // held by a live dirlockd run (or holder)
	serviceStopping     = "stopping"     // held, and the holder is stopping the server
	serviceUnsupervised = "unsupervised" // the holder is dead, the recorded main process lives on
	serviceSurvivors    = "survivors"    // the holder is dead, other processes of it survive
	serviceDead         = "dead"         // nobody is left, but the holder did not shut down cleanly
	serviceStopped      = "stopped"      // nobody is left, and the last holder shut down cleanly (or none ever ran)
	serviceUnknown      = "unknown"      // the directory cannot be inspected
)

var serviceExit = map[string]int{
	serviceRunning: exitcode.StatusRunning, serviceStopping: exitcode.StatusStopping,
	serviceUnsupervised: exitcode.StatusUnsupervised, serviceSurvivors: exitcode.StatusDead,
	serviceDead: exitcode.StatusDead, serviceStopped: exitcode.StatusNotRunning, serviceUnknown: exitcode.StatusUnknown,
}

// service is the server's state as status reports it.
func (r *report) service() string {
	switch r.State {
	case "held":
		if r.Status == string(pidfile.Stopping) {
			return serviceStopping
		}
		return serviceRunning
	case "orphans":
		if r.MainPID > 0 && slices.Contains(r.Orphans, r.MainPID) {
			return serviceUnsupervised
		}
		return serviceSurvivors
	case "stale":
		return serviceDead
	case "free":
		return serviceStopped
	}
	return serviceUnknown
}

func writeJSON(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s\n", b)
}

// inspectFlags are the flags of check and status besides the global ones.
type inspectFlags struct {
	asJSON bool
	lease  leaseFlags
}
