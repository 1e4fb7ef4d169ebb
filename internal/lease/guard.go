package lease

import (
	"context"
	"strconv"
	"time"

	"github.com/dirlockd/dirlockd/internal/proc"
)

// Record fields and server variables of the lease.
const (
	KeyField   = "lease_key"     // the record's lease key
	TokenField = "fencing_token" // the record's fencing token

	TokenEnv = "DIRLOCKD_FENCING_TOKEN"
	KeyEnv   = "DIRLOCKD_LEASE_KEY"
	TTLEnv   = "DIRLOCKD_LEASE_TTL"
)

// A Guard is the lease as dirlockd run holds it around a server: the agent,
// the lease once acquired, the watchdog process, and the two deadlines the
// server keeps: stopped by StopBy, dead by KillBy, both before etcd can end
// the lease. It is acquired after the local interlock and released before
// it, once the server's tree is gone: the watchdog told, the lease
// revoked, the agent closed, in that order. A lost lease is never used
// again. Its methods are for one goroutine, the supervisor's.
type Guard struct {
	Agent  *Agent
	Stop   time.Duration // the server's budget to stop before Margin (--lease-stop-timeout)
	Margin time.Duration // how long before the lease's deadline the tree is dead

	l        *Lease
	agentPID int // stays set once the agent is closed, to know its exit
	watchdog *Watchdog
	told     bool // the watchdog was told the tree is gone
	released bool // the lease was revoked and the agent closed
	lost     bool // Deadlines has reported the loss
}

// NewGuard guards with the lease agent a holds.
func NewGuard(a *Agent, stop, margin time.Duration) *Guard {
	return &Guard{Agent: a, Stop: stop, Margin: margin, agentPID: a.PID()}
}

// Acquire takes the lease for id, waiting for a holder to let it go if
// wait.
func (g *Guard) Acquire(ctx context.Context, id Identity, wait bool) error {
	l, err := g.Agent.Acquire(ctx, id, wait)
	g.l = l
	return err
}

// Lease is the lease once acquired.
func (g *Guard) Lease() *Lease { return g.l }

// Env is what the server learns of the lease.
func (g *Guard) Env() []string {
	return []string{
		TokenEnv + "=" + strconv.FormatInt(g.l.Token(), 10),
		KeyEnv + "=" + g.l.Key(),
		TTLEnv + "=" + strconv.Itoa(int(g.l.TTL()/time.Second)),
	}
}

// Fields are the record fields of the lease: a starter on another host
// reads them to learn whether the lease its holder ran under has ended.
func (g *Guard) Fields() map[string]string {
	return map[string]string{KeyField: g.l.Key(), TokenField: strconv.FormatInt(g.l.Token(), 10)}
}

// Changed delivers a value when the lease's deadline moves or it is lost.
func (g *Guard) Changed() <-chan struct{} { return g.l.Changed() }

// Deadlines returns, on Now's clock, when the server must be stopping
// (the stop signal) and dead (SIGKILL), and, the first time it asks after
// a loss, why the lease is lost: then nothing of the server may run.
func (g *Guard) Deadlines() (stopBy, killBy time.Duration, lost error) {
	dl, err := g.l.Deadline()
	if err != nil && !g.lost {
		g.lost, lost = true, err
	}
	return dl - g.Stop - g.Margin, dl - g.Margin, lost
}

// Released reports whether the guard has been released.
func (g *Guard) Released() bool { return g.released }

// StartWatchdog starts the watchdog process (StartWatchdog), its kill time
// half the margin before the deadline, after the guard's own SIGKILL.
func (g *Guard) StartWatchdog(path string, args ...string) (*Watchdog, error) {
	dl, _ := g.l.Deadline()
	w, err := StartWatchdog(dl-g.Margin/2, path, args...)
	g.watchdog = w
	return w, err
}

// Feed tells the watchdog the latest kill time and the tree as it is now.
func (g *Guard) Feed(tree proc.Tree) error {
	if g.watchdog == nil || g.told {
		return nil
	}
	dl, _ := g.l.Deadline()
	return g.watchdog.Feed(dl-g.Margin/2, tree)
}

// Helpers are the PIDs of the guard's processes, children of the caller
// that are not of the server's tree: the watchdog and the agent.
func (g *Guard) Helpers() []int {
	var h []int
	if g.watchdog != nil {
		h = append(h, g.watchdog.PID())
	}
	if g.agentPID != 0 {
		h = append(h, g.agentPID)
	}
	return h
}

// A Helper names one of the guard's processes.
type Helper int

// The guard's processes.
const (
	NoHelper Helper = iota
	WatchdogHelper
	AgentHelper
)

// Exited handles the exit of pid and says which helper it was, if any, and
// whether the exit was expected (after the guard told it to end).
func (g *Guard) Exited(pid int) (h Helper, expected bool) {
	switch {
	case pid == 0:
		return NoHelper, false
	case g.watchdog != nil && pid == g.watchdog.PID():
		g.watchdog = nil
		return WatchdogHelper, g.told
	case pid == g.agentPID:
		g.agentPID = 0
		return AgentHelper, g.released
	}
	return NoHelper, false
}

// Watchdog is the watchdog's PID, 0 without one.
func (g *Guard) Watchdog() int {
	if g.watchdog == nil {
		return 0
	}
	return g.watchdog.PID()
}

// Release ends the guard once the server's tree is gone: the watchdog is
// told, the lease revoked (so that a waiter on another host starts at
// once), the agent closed. It returns the revoke's error; it does nothing
// the second time.
func (g *Guard) Release() error {
	if g.released {
		return nil
	}
	g.released = true
	if g.watchdog != nil && !g.told {
		g.watchdog.Bye()
		g.told = true
	}
	var err error
	if g.l != nil {
		err = g.l.Release()
	}
	g.Agent.Close()
	return err
}
