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

// Record fields and server variables of the lease.
const (
	leaseKeyField     = "lease_key"
	fencingTokenField = "fencing_token"

	fencingTokenEnv = "DIRLOCKD_FENCING_TOKEN"
	leaseKeyEnv     = "DIRLOCKD_LEASE_KEY"
	leaseTTLEnv     = "DIRLOCKD_LEASE_TTL"
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
// this process drives every renewal through it (package lease).
type runLease struct {
	flags    leaseFlags
	timing   leaseTiming
	a        *lease.Agent
	agentPID int // stays set once the agent is closed, to know its exit
	l        *lease.Lease
	released bool // the lease was revoked and the agent closed

	term, kill *time.Timer // armed from the deadline; nil until the first arm
	lost       bool        // the loss has been acted on
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
	r.lease.a, r.lease.agentPID = a, a.PID()
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
	key, token := rec.Extra[leaseKeyField], rec.Extra[fencingTokenField]
	t, err := strconv.ParseInt(token, 10, 64)
	if key != r.lease.a.Key() || err != nil || t <= 0 {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.lease.flags.dialTimeout)
	defer cancel()
	h, err := r.lease.a.Holder(ctx)
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
		l, err := r.lease.a.Acquire(ctx, id, wait != 0)
		r.lease.l = l
		return err
	})
	if stop != 0 {
		return stop, 0
	}
	if err != nil {
		return 0, r.leaseFailed(err)
	}
	l := r.lease.l
	r.log.Info("acquired the lease", "lease_key", l.Key(), "fencing_token", l.Token(), "lease_ttl", l.TTL(), "lease_id", strconv.FormatInt(l.ID(), 16),
		"etcd", r.lease.a.Endpoints(), "stop_before", r.lease.timing.stop+r.lease.timing.margin, "kill_before", r.lease.timing.margin)
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
	l := r.lease.l
	return []string{
		fencingTokenEnv + "=" + strconv.FormatInt(l.Token(), 10),
		leaseKeyEnv + "=" + l.Key(),
		leaseTTLEnv + "=" + strconv.Itoa(int(l.TTL()/time.Second)),
	}
}

// leaseTimers returns the channels of the stop and kill timers (nil without
// a lease).
func (r *runner) leaseTimers() (term, kill <-chan time.Time) {
	if r.lease == nil || r.lease.term == nil {
		return nil, nil
	}
	return r.lease.term.C, r.lease.kill.C
}

// leaseChanged re-arms the timers from the lease's latest deadline, and
// acts on a loss.
func (r *runner) leaseChanged() {
	ls := r.lease
	dl, err := ls.l.Deadline()
	if ls.term != nil {
		ls.term.Stop()
		ls.kill.Stop()
	}
	if ls.released {
		return // revoked once the tree was gone: nothing left to guard
	}
	// Go's timers run on CLOCK_MONOTONIC, the deadline on CLOCK_BOOTTIME:
	// after a suspend they fire late, the fence (which reads the clock
	// itself) does not.
	now := lease.Now()
	ls.term = time.NewTimer(dl - ls.timing.stop - ls.timing.margin - now)
	ls.kill = time.NewTimer(dl - ls.timing.margin - now)
	r.feedFence()
	if err == nil || ls.lost {
		return
	}
	// etcd may already have ended the lease, and another host may hold
	// the key: nothing of the server may run now.
	ls.lost = true
	r.log.Error("the lease is lost: killing the server's tree", "lease_key", ls.l.Key(), "fencing_token", ls.l.Token(), "err", err)
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
	ls := r.lease
	dl, _ := ls.l.Deadline()
	r.log.Error("the lease was not renewed in time: stopping the server before it can end", "lease_key", ls.l.Key(),
		"deadline_in", max(dl-lease.Now(), 0).Round(time.Millisecond), "renewals", ls.l.LastError())
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
	dl, _ := r.lease.l.Deadline()
	if left := dl - lease.Now(); left > 0 {
		r.log.Warn("sending SIGKILL to the server's tree before the lease can end", "deadline_in", left.Round(time.Millisecond), "pids", t.PIDs())
	} else {
		r.log.Warn("sending SIGKILL to the server's tree: the lease's deadline has passed", "pids", t.PIDs())
	}
	t.Signal(unix.SIGKILL)
}

// releaseLease revokes the lease once the tree is gone (so that a waiter on
// another host starts at once), and closes the agent.
func (r *runner) releaseLease() {
	if r.lease == nil || r.lease.a == nil || r.lease.released {
		return
	}
	r.lease.released = true
	if l := r.lease.l; l != nil {
		if err := l.Release(); err != nil {
			r.log.Warn("cannot revoke the lease: it ends after its TTL", "lease_key", l.Key(), "err", err)
		} else {
			r.log.Info("revoked the lease", "lease_key", l.Key(), "fencing_token", l.Token())
		}
	}
	r.lease.a.Close()
}

// helpers are the PIDs of our children that are not of the server's tree:
// the fence and the etcd agent.
func (r *runner) helpers() []int {
	var h []int
	if r.fence != nil {
		h = append(h, r.fence.PID())
	}
	if r.lease != nil && r.lease.agentPID != 0 {
		h = append(h, r.lease.agentPID)
	}
	return h
}

// isHelper reports whether pid is the fence or the agent.
func (r *runner) isHelper(pid int) bool { return pid != 0 && slices.Contains(r.helpers(), pid) }

// feedFence tells the fence the latest kill time, half the margin before
// the deadline (after run's own SIGKILL), and the tree as it is now.
func (r *runner) feedFence() {
	if r.fence == nil || r.fenceBye {
		return
	}
	dl, _ := r.lease.l.Deadline()
	t := pinTree(r.helpers()...)
	defer t.Close()
	if err := r.fence.Feed(dl-r.lease.timing.margin/2, t); err != nil {
		r.log.Warn(err.Error()+": if dirlockd is stopped now, its server may outlive the lease", "lease_key", r.lease.l.Key())
	}
}

// helpersIfAlone ends the helpers once they are dirlockd's only children
// left: the server's tree is gone then. The fence is told bye, the lease
// revoked, the agent closed; their exits let reapAll see that nothing is
// left, and the local interlock is released after.
func (r *runner) helpersIfAlone() {
	if r.lease == nil || r.lease.released {
		return
	}
	for _, k := range proc.Children(os.Getpid()) {
		if !r.isHelper(k) {
			return
		}
	}
	if r.fence != nil && !r.fenceBye {
		r.fence.Bye()
		r.fenceBye = true
	}
	r.releaseLease()
}

// helperExited handles the exit of the fence or the agent, and reports
// whether pid was one of them.
func (r *runner) helperExited(pid int, ws unix.WaitStatus) bool {
	switch {
	case r.fence != nil && pid == r.fence.PID():
		r.fenceExited(ws)
	case r.lease != nil && pid == r.lease.agentPID:
		r.lease.agentPID = 0
		if r.lease.released {
			return true
		}
		// Nothing can renew the lease now: stop the server while the
		// lease is still ours; the kill timer stands.
		r.log.Error("the etcd agent exited: stopping the server before the lease can end", "pid", pid, "status", describe(ws))
		if !r.stopAsked {
			r.stop(r.flags.stopSig, "the etcd agent exited")
		}
	default:
		return false
	}
	return true
}

// fenceExited handles the fence's exit: expected after bye; otherwise a
// stopped dirlockd would no longer be covered.
func (r *runner) fenceExited(ws unix.WaitStatus) {
	if !r.fenceBye {
		r.log.Warn("the fence process exited: if dirlockd is stopped now, its server may outlive the lease", "pid", r.fence.PID(), "status", describe(ws))
	}
	r.fence = nil
}
