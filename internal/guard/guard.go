// Package guard names what holds a data directory while a server runs,
// as dirlockd run's supervisor (package supervise) sees it: the local
// interlock (supervise.LocalGuard) and the etcd lease (lease.Guard). It is
// a package of its own so that the lease, which the etcd agent's side
// shares, implements it without linking the supervisor.
package guard

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
)

// A Guard holds the data directory while the server runs: dirlockd's local
// interlock (supervise.LocalGuard), the etcd lease (lease.Guard). It is acquired
// before the supervisor starts the server; the supervisor learns of its
// changes (Changed, then Check), stops the server when it is lost or its
// deadlines come, and releases it after the tree is gone, guards in the
// reverse of their order. Its methods are called from the supervisor's
// goroutine only. A guard whose deadlines processes of its own enforce
// too is a DeadlineGuard.
type Guard interface {
	// Fields are the record fields it adds; Env the server's variables.
	Fields() map[string]string
	Env() []string
	// Changed delivers a value when Check may have news.
	Changed() <-chan struct{}
	// Check says what has changed since the last call.
	Check() Event
	// Release lets go of it, once the server's tree is gone.
	Release() error
}

// A DeadlineGuard is a guard with deadlines (Event.Deadlines) and
// helper processes, children of the supervisor that are not of the
// server's tree, that enforce them should the supervisor itself be stopped
// or die: the lease, with its watchdog and its etcd agent. The supervisor
// leaves the helpers out of the tree, and releases the guard once they are
// its only children left, so that they can exit and the tree be seen
// gone.
type DeadlineGuard interface {
	Guard
	// Tree tells it the server's tree as it is now: at the start, and
	// after each of its deadlines moved.
	Tree(t proc.Tree)
	// Overdue logs why the stop signal (kill false) or SIGKILL (kill
	// true, to pids) is sent at its deadline, or for its loss.
	Overdue(kill bool, pids []int)
	// Helpers are its processes among our children; HelperExited
	// handles the exit of one of them, and reports whether pid was one.
	Helpers() []int
	HelperExited(pid int, ws unix.WaitStatus) (mine bool, ev Event)
}

// An Event is what a guard reports.
type Event struct {
	// Lost says the guard no longer holds the directory, and why: with
	// Kill, the tree gets SIGKILL at once (a lease that may already have
	// ended); without, OnLost says what is done.
	Lost error
	Kill bool
	// Stop, when set, stops the server for that reason, whatever OnLost
	// says: the guard cannot hold much longer (a lease with nobody left to
	// renew it).
	Stop string
	// Deadlines sets, from now, when the server must be stopping (StopIn)
	// and dead (KillIn); Why is the reason the stop at them gives.
	Deadlines      bool
	StopIn, KillIn time.Duration
	Why            string
}
