package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

// runLease is run's side of the etcd lease: the second, cross-host
// interlock, taken after the local one and released before it. The rule it
// keeps is that the server's tree is dead before the lease can end: SIGTERM
// at deadline - stop timeout - margin, SIGKILL at deadline - margin, where
// the deadline is the lease's own (the send time of the last renewal that
// succeeded + TTL). A lost lease is never used again: the server is
// stopped, and the next start gets a new lease and a new token.
//
// etcd's client is not in this binary: the agent, dirlockd-etcd, a child
// of ours kept out of the server's tree like the fence, talks to etcd, and
// this process drives every renewal through it (package lease). The
// lease's state is its lease.Guard's; run keeps the timers.
type runLease struct {
	flags  leaseFlags
	timing leaseTiming
	g      *lease.Guard // nil until the agent has started

	term, kill *time.Timer // armed from the deadlines; nil until the first arm
}

// leaseDial starts the etcd agent and asks who holds the key, before
// anything is written: no agent installed or a foreign key or no
// permission (78), etcd unreachable (69), or, without --wait, a key held by
// another holder (75) fails here and leaves nothing but a log line.
func (r *runner) leaseDial() int {
	a, err := r.lease.flags.startAgent()
	if err != nil {
		return r.leaseFailed(err)
	}
	r.lease.g = lease.NewGuard(a, r.lease.timing.stop, r.lease.timing.margin)
	r.log.Debug("started the etcd agent", "pid", a.PID())
	h, err := a.Holder(context.Background())
	if err != nil {
		return r.leaseFailed(err)
	}
	if h != nil && r.opts.Wait == 0 {
		return r.leaseFailed(&lease.HeldError{Key: a.Key(), Holder: *h})
	}
	r.opts.TakeoverProof = r.leaseProof
	return 0
}

// leaseProof is the lease's part in a takeover on shared storage
// (docs/nfs.md, docs/lease.md): the record of another host's holder that
// did not stop cleanly names the lease key and fencing token it ran
// under. If etcd now has that key free, or under a higher token, that
// lease has ended, and its holder's tree died before it could (the fence
// sees to it), so the heartbeat watch would prove nothing more and is
// skipped. Anything else (another key, no token, etcd not answering, the
// same token still held) leaves the watch to decide.
func (r *runner) leaseProof(rec *pidfile.Record) string {
	key, token := rec.Extra[lease.KeyField], rec.Extra[lease.TokenField]
	t, err := strconv.ParseInt(token, 10, 64)
	if key != r.lease.g.Agent.Key() || err != nil || t <= 0 {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.lease.flags.dialTimeout)
	defer cancel()
	h, err := r.lease.g.Agent.Holder(ctx)
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

// acquireLease takes the lease once the local interlock is ours, waiting
// for the rest of --wait if it is held. A SIGTERM or SIGINT gives up.
func (r *runner) acquireLease(sigs <-chan os.Signal, began time.Time) (syscall.Signal, int) {
	id, err := lease.Self(r.lock.Record().DataDir)
	if err != nil {
		r.log.Error("cannot start: "+err.Error(), "datadir", r.dir)
		return 0, exitcode.Internal
	}
	wait := r.opts.Wait
	if wait > 0 {
		wait = max(wait-time.Since(began), time.Millisecond)
	}
	stop, err := r.interruptible(sigs, func(ctx context.Context) error {
		if wait > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, wait)
			defer cancel()
		}
		return r.lease.g.Acquire(ctx, id, wait != 0)
	})
	if stop != 0 {
		return stop, 0
	}
	if err != nil {
		return 0, r.leaseFailed(err)
	}
	l := r.lease.g.Lease()
	r.log.Info("acquired the lease", "lease_key", l.Key(), "fencing_token", l.Token(), "lease_ttl", l.TTL(), "lease_id", strconv.FormatInt(l.ID(), 16),
		"etcd", r.lease.g.Agent.Endpoints(), "stop_before", r.lease.timing.stop+r.lease.timing.margin, "kill_before", r.lease.timing.margin)
	return 0, 0
}

// leaseFailed logs why the lease cannot be had and returns run's status.
func (r *runner) leaseFailed(err error) int {
	var he *lease.HeldError
	var ue *lease.UnavailableError
	var re *lease.RefusedError
	var nf *lease.NotFoundError
	switch {
	case errors.As(err, &nf):
		r.log.Error("cannot start: "+err.Error(), "datadir", r.dir)
		return exitcode.Invalid
	case errors.As(err, &he):
		h := he.Holder
		r.log.Error("cannot start: "+err.Error(), "datadir", r.dir, "lease_key", he.Key, "holder_host", h.Host, "holder_pid", h.PID,
			"since", h.Started.Format(time.RFC3339), "fencing_token", h.Token,
			"hint", "stop it on "+h.Host+" first, or wait: --wait DURATION")
		return r.flags.conflictExit
	case errors.As(err, &ue):
		r.log.Error("cannot start: "+err.Error(), "datadir", r.dir, "hint", "check --etcd and that a majority of etcd's members is up")
		return exitcode.Unavailable
	case errors.As(err, &re):
		r.log.Error("cannot start: "+err.Error(), "datadir", r.dir)
		return exitcode.Invalid
	}
	r.log.Error("cannot start: "+err.Error(), "datadir", r.dir)
	return exitcode.Internal
}

// leaseEnv is what the server learns of the lease.
func (r *runner) leaseEnv() []string {
	if r.lease == nil {
		return nil
	}
	return r.lease.g.Env()
}

// leaseTimers returns the channels of the stop and kill timers (nil without
// a lease).
func (r *runner) leaseTimers() (term, kill <-chan time.Time) {
	if r.lease == nil || r.lease.term == nil {
		return nil, nil
	}
	return r.lease.term.C, r.lease.kill.C
}

// leaseChanged re-arms the timers from the lease's latest deadlines, and
// acts on a loss.
func (r *runner) leaseChanged() {
	ls := r.lease
	stopBy, killBy, lost := ls.g.Deadlines()
	if ls.term != nil {
		ls.term.Stop()
		ls.kill.Stop()
	}
	if ls.g.Released() {
		return // revoked once the tree was gone: nothing left to guard
	}
	// Go's timers run on CLOCK_MONOTONIC, the deadline on CLOCK_BOOTTIME:
	// after a suspend they fire late, the fence (which reads the clock
	// itself) does not.
	now := lease.Now()
	ls.term = time.NewTimer(stopBy - now)
	ls.kill = time.NewTimer(killBy - now)
	r.feedFence()
	if lost == nil {
		return
	}
	// etcd may already have ended the lease, and another host may hold
	// the key: nothing of the server may run now.
	l := ls.g.Lease()
	r.log.Error("the lease is lost: killing the server's tree", "lease_key", l.Key(), "fencing_token", l.Token(), "err", lost)
	r.leaseKill()
}

// leaseTerm fires at deadline - stop timeout - margin: no renewal has
// succeeded for too long, so the server is stopped while the lease is
// still certainly ours. A renewal that succeeds later moves the SIGKILL
// but does not undo the stop: a lease that may have been lost is not used
// again.
func (r *runner) leaseTerm() {
	if r.stopAsked {
		return // a stop is under way; the SIGKILL timer still stands
	}
	l := r.lease.g.Lease()
	dl, _ := l.Deadline()
	r.log.Error("the lease was not renewed in time: stopping the server before it can end", "lease_key", l.Key(),
		"deadline_in", max(dl-lease.Now(), 0).Round(time.Millisecond), "renewals", l.LastError())
	r.stop(r.flags.stopSig, "lease deadline")
}

// leaseKill fires at deadline - margin, or at a loss: every process of the
// tree gets SIGKILL.
func (r *runner) leaseKill() {
	r.beginStop("lease deadline")
	t := pinTree(r.helpers()...)
	defer t.Close()
	if len(t) == 0 {
		return // the tree is gone already
	}
	dl, _ := r.lease.g.Lease().Deadline()
	if left := dl - lease.Now(); left > 0 {
		r.log.Warn("sending SIGKILL to the server's tree before the lease can end", "deadline_in", left.Round(time.Millisecond), "pids", t.PIDs())
	} else {
		r.log.Warn("sending SIGKILL to the server's tree: the lease's deadline has passed", "pids", t.PIDs())
	}
	t.Signal(unix.SIGKILL)
}

// releaseLease releases the guard once the tree is gone: the fence told,
// the lease revoked (so that a waiter on another host starts at once), the
// agent closed.
func (r *runner) releaseLease() {
	if r.lease == nil || r.lease.g == nil || r.lease.g.Released() {
		return
	}
	err := r.lease.g.Release()
	if l := r.lease.g.Lease(); l != nil {
		if err != nil {
			r.log.Warn("cannot revoke the lease: it ends after its TTL", "lease_key", l.Key(), "err", err)
		} else {
			r.log.Info("revoked the lease", "lease_key", l.Key(), "fencing_token", l.Token())
		}
	}
}

// helpers are the PIDs of our children that are not of the server's tree:
// the fence and the etcd agent.
func (r *runner) helpers() []int {
	if r.lease == nil || r.lease.g == nil {
		return nil
	}
	return r.lease.g.Helpers()
}

// isHelper reports whether pid is the fence or the agent.
func (r *runner) isHelper(pid int) bool { return pid != 0 && slices.Contains(r.helpers(), pid) }

// feedFence tells the fence the latest kill time, half the margin before
// the deadline (after run's own SIGKILL), and the tree as it is now.
func (r *runner) feedFence() {
	if r.lease == nil || r.lease.g.Watchdog() == 0 {
		return
	}
	t := pinTree(r.helpers()...)
	defer t.Close()
	if err := r.lease.g.Feed(t); err != nil {
		r.log.Warn(err.Error()+": if dirlockd is stopped now, its server may outlive the lease", "lease_key", r.lease.g.Lease().Key())
	}
}

// helpersIfAlone ends the helpers once they are dirlockd's only children
// left: the server's tree is gone then. The fence is told bye, the lease
// revoked, the agent closed; their exits let reapAll see that nothing is
// left, and the local interlock is released after.
func (r *runner) helpersIfAlone() {
	if r.lease == nil || r.lease.g.Released() {
		return
	}
	for _, k := range proc.Children(os.Getpid()) {
		if !r.isHelper(k) {
			return
		}
	}
	r.releaseLease()
}

// helperExited handles the exit of the fence or the agent, and reports
// whether pid was one of them.
func (r *runner) helperExited(pid int, ws unix.WaitStatus) bool {
	if r.lease == nil || r.lease.g == nil {
		return false
	}
	switch h, expected := r.lease.g.Exited(pid); {
	case h == lease.WatchdogHelper && !expected:
		r.log.Warn("the fence process exited: if dirlockd is stopped now, its server may outlive the lease", "pid", pid, "status", describe(ws))
	case h == lease.AgentHelper && !expected:
		// Nothing can renew the lease now: stop the server while the
		// lease is still ours; the kill timer stands.
		r.log.Error("the etcd agent exited: stopping the server before the lease can end", "pid", pid, "status", describe(ws))
		if !r.stopAsked {
			r.stop(r.flags.stopSig, "the etcd agent exited")
		}
	case h == lease.NoHelper:
		return false
	}
	return true
}
