package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/supervise"
	"github.com/dirlockd/dirlockd/pidfile"
)

// leaseGuard is run's side of the etcd lease: the second, cross-host
// interlock, taken after the local one and released before it, as the
// supervisor's guard. The rule it keeps is that the server's tree is dead
// before the lease can end: the stop signal at deadline - stop timeout -
// margin, SIGKILL at deadline - margin, where the deadline is the lease's
// own (the send time of the last renewal that succeeded + TTL). A lost
// lease is never used again: the server is stopped, and the next start
// gets a new lease and a new token.
//
// etcd's client is not in this binary: the agent, dirlockd-etcd, a child
// of ours kept out of the server's tree like the fence, talks to etcd, and
// this process drives every renewal through it (package lease). The
// lease's state is its lease.Guard's.
type leaseGuard struct {
	*lease.Guard // nil until the agent has started
	flags        leaseFlags
	timing       leaseTiming
	log          *slog.Logger
}

// dialLease starts the etcd agent and asks who holds the key, before
// anything is written: no agent installed or a foreign key or no
// permission (78), etcd unreachable (69), or, without --wait, a key held by
// another holder (75) fails here and leaves nothing but a log line. A
// takeover on shared storage then asks the lease too (opts.TakeoverProof).
func dialLease(f leaseFlags, opts *interlock.Options, conflictExit int, dir string, log *slog.Logger) (*leaseGuard, int) {
	t, _ := f.timing()
	lg := &leaseGuard{flags: f, timing: t, log: log}
	a, err := f.startAgent()
	if err != nil {
		return lg, leaseFailed(log, err, dir, conflictExit)
	}
	lg.Guard = lease.NewGuard(a, t.stop, t.margin)
	log.Debug("started the etcd agent", "pid", a.PID())
	h, err := a.Holder(context.Background())
	if err != nil {
		return lg, leaseFailed(log, err, dir, conflictExit)
	}
	if h != nil && opts.Wait == 0 {
		return lg, leaseFailed(log, &lease.HeldError{Key: a.Key(), Holder: *h}, dir, conflictExit)
	}
	opts.TakeoverProof = lg.proof
	return lg, 0
}

// proof is the lease's part in a takeover on shared storage
// (docs/nfs.md, docs/lease.md): the record of another host's holder that
// did not stop cleanly names the lease key and fencing token it ran
// under. If etcd now has that key free, or under a higher token, that
// lease has ended, and its holder's tree died before it could (the fence
// sees to it), so the heartbeat watch would prove nothing more and is
// skipped. Anything else (another key, no token, etcd not answering, the
// same token still held) leaves the watch to decide.
func (lg *leaseGuard) proof(rec *pidfile.Record) string {
	key, token := rec.Extra[lease.KeyField], rec.Extra[lease.TokenField]
	t, err := strconv.ParseInt(token, 10, 64)
	if key != lg.Agent.Key() || err != nil || t <= 0 {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), lg.flags.dialTimeout)
	defer cancel()
	h, err := lg.Agent.Holder(ctx)
	switch {
	case err != nil:
		return ""
	case h == nil:
		return fmt.Sprintf("its lease on %s (fencing token %d) has ended: etcd has the key free", key, t)
	case h.Token > t:
		return fmt.Sprintf("its lease on %s (fencing token %d) has ended: etcd has the key under token %d", key, t, h.Token)
	}
	return ""
}

// acquire takes the lease once the local interlock is ours, waiting for
// the rest of wait if it is held. A SIGTERM or SIGINT gives up.
func (lg *leaseGuard) acquire(sigs <-chan os.Signal, early *[]syscall.Signal, dataDir, dir string, wait time.Duration, began time.Time, conflictExit int) (syscall.Signal, int) {
	id, err := lease.Self(dataDir)
	if err != nil {
		lg.log.Error("cannot start: "+err.Error(), "datadir", dir)
		return 0, exitcode.Internal
	}
	if wait > 0 {
		wait = max(wait-time.Since(began), time.Millisecond)
	}
	stop, err := interruptible(sigs, early, func(ctx context.Context) error {
		if wait > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, wait)
			defer cancel()
		}
		return lg.Guard.Acquire(ctx, id, wait != 0)
	})
	if stop != 0 {
		return stop, 0
	}
	if err != nil {
		return 0, leaseFailed(lg.log, err, dir, conflictExit)
	}
	l := lg.Lease()
	lg.log.Info("acquired the lease", "lease_key", l.Key(), "fencing_token", l.Token(), "lease_ttl", l.TTL(), "lease_id", strconv.FormatInt(l.ID(), 16),
		"etcd", lg.Agent.Endpoints(), "stop_before", lg.timing.stop+lg.timing.margin, "kill_before", lg.timing.margin)
	return 0, 0
}

// leaseFailed logs why the lease cannot be had and returns run's status.
func leaseFailed(log *slog.Logger, err error, dir string, conflictExit int) int {
	var he *lease.HeldError
	var ue *lease.UnavailableError
	switch {
	case errors.As(err, &he):
		h := he.Holder
		log.Error("cannot start: "+err.Error(), "datadir", dir, "lease_key", he.Key, "holder_host", h.Host, "holder_pid", h.PID,
			"since", h.Started.Format(time.RFC3339), "fencing_token", h.Token,
			"hint", "stop it on "+h.Host+" first, or wait: --wait DURATION")
	case errors.As(err, &ue):
		log.Error("cannot start: "+err.Error(), "datadir", dir, "hint", "check --etcd and that a majority of etcd's members is up")
	default:
		log.Error("cannot start: "+err.Error(), "datadir", dir)
	}
	return startExit(err, conflictExit)
}

// Check re-reads the lease's deadlines, and reports a loss: etcd may
// already have ended the lease, and another host may hold the key, so
// nothing of the server may run now. Go's timers run on CLOCK_MONOTONIC,
// the deadline on CLOCK_BOOTTIME: after a suspend they fire late, the
// fence (which reads the clock itself) does not.
func (lg *leaseGuard) Check() supervise.Event {
	stopBy, killBy, lost := lg.Deadlines()
	now := lease.Now()
	ev := supervise.Event{Deadlines: true, StopIn: stopBy - now, KillIn: killBy - now, Why: "lease deadline"}
	if lost != nil {
		l := lg.Lease()
		lg.log.Error("the lease is lost: killing the server's tree", "lease_key", l.Key(), "fencing_token", l.Token(), "err", lost)
		ev.Lost, ev.Kill = lost, true
	}
	return ev
}

// Tree tells the fence the latest kill time, half the margin before the
// deadline (after run's own SIGKILL), and the tree as it is now.
func (lg *leaseGuard) Tree(t proc.Tree) {
	if err := lg.Feed(t); err != nil {
		lg.log.Warn(err.Error()+": if dirlockd is stopped now, its server may outlive the lease", "lease_key", lg.Lease().Key())
	}
}

// Overdue logs why the server is stopped, or killed, at a deadline. A
// renewal that succeeds after the stop moves the SIGKILL but does not undo
// the stop: a lease that may have been lost is not used again.
func (lg *leaseGuard) Overdue(kill bool, pids []int) {
	l := lg.Lease()
	dl, _ := l.Deadline()
	left := dl - lease.Now()
	switch {
	case !kill:
		lg.log.Error("the lease was not renewed in time: stopping the server before it can end", "lease_key", l.Key(),
			"deadline_in", max(left, 0).Round(time.Millisecond), "renewals", l.LastError())
	case left > 0:
		lg.log.Warn("sending SIGKILL to the server's tree before the lease can end", "deadline_in", left.Round(time.Millisecond), "pids", pids)
	default:
		lg.log.Warn("sending SIGKILL to the server's tree: the lease's deadline has passed", "pids", pids)
	}
}

// HelperExited handles the exit of the fence or the agent.
func (lg *leaseGuard) HelperExited(pid int, ws unix.WaitStatus) (bool, supervise.Event) {
	if lg.Guard == nil {
		return false, supervise.Event{}
	}
	switch h, expected := lg.Exited(pid); {
	case h == lease.NoHelper:
		return false, supervise.Event{}
	case h == lease.WatchdogHelper && !expected:
		// A stopped dirlockd would no longer be covered.
		lg.log.Warn("the fence process exited: if dirlockd is stopped now, its server may outlive the lease", "pid", pid, "status", supervise.Describe(ws))
	case h == lease.AgentHelper && !expected:
		// Nothing can renew the lease now: stop the server while the
		// lease is still ours; the kill timer stands.
		lg.log.Error("the etcd agent exited: stopping the server before the lease can end", "pid", pid, "status", supervise.Describe(ws))
		return true, supervise.Event{Stop: "the etcd agent exited"}
	}
	return true, supervise.Event{}
}

// Release revokes the lease once the tree is gone (so that a waiter on
// another host starts at once), after telling the fence, and closes the
// agent. A revoke that fails is only a warning: the lease ends after its
// TTL.
func (lg *leaseGuard) Release() error {
	if lg.Guard == nil || lg.Released() {
		return nil
	}
	err := lg.Guard.Release()
	if l := lg.Lease(); l != nil {
		if err != nil {
			lg.log.Warn("cannot revoke the lease: it ends after its TTL", "lease_key", l.Key(), "err", err)
		} else {
			lg.log.Info("revoked the lease", "lease_key", l.Key(), "fencing_token", l.Token())
		}
	}
	return nil
}

// Helpers are the fence and the agent.
func (lg *leaseGuard) Helpers() []int {
	if lg.Guard == nil {
		return nil
	}
	return lg.Guard.Helpers()
}
