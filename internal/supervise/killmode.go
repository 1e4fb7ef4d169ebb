package supervise

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/pidfile"
)

// A KillMode says which processes of the server's tree a stop signals, with
// the meaning of systemd's KillMode= (systemd.kill(5)).
type KillMode string

const (
	// ControlGroup: the stop signal goes to every process of the
	// tree, then SIGKILL to every one left after the stop timeout.
	// systemd's default, and dirlockd's: a database whose start script
	// ignores SIGTERM (mysqld_safe) still gets it itself.
	ControlGroup KillMode = "control-group"
	// Mixed: the stop signal goes to the main process alone (which
	// stops its own children: PostgreSQL's postmaster, Apache), SIGTERM
	// to whatever is left when it has exited, and SIGKILL to every
	// process left after the stop timeout.
	Mixed KillMode = "mixed"
	// Process: the stop signal, and SIGKILL after the stop timeout, go
	// to the main process alone; the rest of the tree is left to exit on
	// its own, and the supervisor holds the directory until it has.
	Process KillMode = "process"
)

// KillModes are the kill modes' names, for help and completion.
var KillModes = []string{string(ControlGroup), string(Mixed), string(Process)}

// ParseKillMode parses a kill mode's name.
func ParseKillMode(s string) (KillMode, error) {
	switch m := KillMode(s); m {
	case ControlGroup, Mixed, Process:
		return m, nil
	}
	return "", fmt.Errorf("%q: want control-group, mixed or process", s)
}

func selfPID() int { return os.Getpid() }

// The record fields with which dirlockd run tells dirlockd stop, reload and
// status how its server is stopped and reloaded, for when dirlockd run
// itself is gone. A record without them (written by an older dirlockd, or
// by another program using package interlock) means the defaults: SIGTERM,
// SIGHUP, control-group.
const (
	StopSignalKey   = "stop_signal"   // SignalName of the stop signal
	ReloadSignalKey = "reload_signal" // SignalName of the reload signal
	KillModeKey     = "kill_mode"     // the KillMode
)

// Recorded is how a holder's record says its server is stopped and
// reloaded, and which process is its main process.
type Recorded struct {
	Stop, Reload syscall.Signal
	KillMode     KillMode
	MainPID      int // 0: none
}

// ReadRecord returns what rec says of its server; a field it lacks or that
// cannot be read is the default (nil: the defaults).
func ReadRecord(rec *pidfile.Record) Recorded {
	r := Recorded{Stop: unix.SIGTERM, Reload: unix.SIGHUP, KillMode: ControlGroup}
	if rec == nil {
		return r
	}
	if sig, err := ParseSignal(rec.Extra[StopSignalKey]); err == nil {
		r.Stop = sig
	}
	if sig, err := ParseSignal(rec.Extra[ReloadSignalKey]); err == nil {
		r.Reload = sig
	}
	if m, err := ParseKillMode(rec.Extra[KillModeKey]); err == nil {
		r.KillMode = m
	}
	r.MainPID, _ = strconv.Atoi(rec.Extra[MainPIDKey])
	return r
}
