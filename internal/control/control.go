// Package control acts on a data directory's server from outside it, as
// dirlockd stop, reload, wait and status do: it inspects the directory,
// checks that the caller may act on the holder, pins the holder (or a dead
// holder's survivors) by pidfd once the kernel proves it, signals it, and
// for a stop waits until the directory is free, with SIGKILL after a
// deadline (Stop, Reload); it waits for a directory to be free or its
// server ready (Wait); and it reports what it finds (Report).
//
// Nothing here is signalled by a PID alone: a process is signalled only
// through a pidfd opened while interlock proved it the holder, a process
// of its instance, or a survivor of a dead holder (interlock.Report's
// PinHolder, PinInstance, PinSurvivors), so that a PID recycled meanwhile
// cannot be hit. How a dead holder's server is stopped and reloaded is what
// its record says (supervise.ReadRecord). The package says what it does in
// log lines; its callers turn the Outcome into an exit status.
//
// It is not a client of the running dirlockd: there is no control socket.
// The holder's record in the pidfile and the kernel's word on the lock and
// the processes are the whole interface, so that a server whose dirlockd
// run died is still stopped and reloaded as it was told.
package control

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/users"
)

// An Outcome is how a Stop or a Reload ended.
type Outcome int

const (
	// Done: the directory is free (stopped, or nobody was running), or
	// the reload signal was sent.
	Done Outcome = iota
	// Failed: still held after the timeout, the holder cannot be proven
	// (another host or PID namespace), survivors without Stop.Survivors,
	// not allowed, or the signal failed.
	Failed
	// Unreadable: the data directory or pidfile cannot be inspected.
	Unreadable
	// NotRunning: Reload found nobody to reload.
	NotRunning
)

// mayAct reports whether this process may signal the holder of rep: root
// and the user the holder runs as may. If not, it says so.
func mayAct(log *slog.Logger, rep *interlock.Report, action string) bool {
	euid := uint32(os.Geteuid())
	if rep.MaySignal(euid) {
		return true
	}
	log.Error(fmt.Sprintf("not allowed: only root or %s, the user the holder runs as, may %s it", holderName(rep), action), "you", users.Name(euid))
	return false
}

// holderName names the user the holder of rep runs as.
func holderName(rep *interlock.Report) string {
	if rep.HolderUID == nil {
		return "the pidfile's owner"
	}
	return users.Name(*rep.HolderUID)
}

// deadHolder is the PID of rep's recorded holder, "none" without a record.
func deadHolder(rep *interlock.Report) string {
	if rep.Record == nil {
		return "none"
	}
	return strconv.Itoa(rep.Record.PID)
}

// closeAll closes the pidfds of ps.
func closeAll(ps []*interlock.PinnedHolder) {
	for _, p := range ps {
		p.Close()
	}
}

func pinnedPIDs(ps []*interlock.PinnedHolder) []int {
	out := make([]int, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.PID)
	}
	return out
}
