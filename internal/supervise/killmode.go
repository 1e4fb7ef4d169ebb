package supervise

import (
	"fmt"
	"os"
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
