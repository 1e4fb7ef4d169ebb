package main

import (
	"context"
	"errors"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/proc"
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
type runLease struct {
	flags  leaseFlags
	timing leaseTiming
	cli    *lease.Client
	l      *lease.Lease

	term, kill *time.Timer // armed from the deadline; nil until the first arm
	lost       bool        // the loss has been acted on
}

// leaseDial connects to etcd and asks who holds the key, before anything
// is written: etcd unreachable (69), a foreign key or no permission (78),
// or, without --wait, a key held by another holder (75) fails here and
// leaves nothing but a log line.
func (r *runner) leaseDial() int {
	cfg, err := r.lease.flags.config()
	if err != nil {
		r.log.Error("cannot start: "+err.Error(), "datadir", r.dir)
		return exitInvalid
	}
	cli, err := lease.Dial(cfg)
	if err != nil {
		return r.leaseFailed(err)
	}
	r.lease.cli = cli
	h, err := cli.Holder(context.Background())
	if err != nil {
		return r.leaseFailed(err)
	}
	if h != nil && r.opts.Wait == 0 {
		return r.leaseFailed(&lease.HeldError{Key: cfg.Key, Holder: *h})
	}
	return 0
}

// acquireLease takes the lease once the local interlock is ours, waiting
// for the rest of --wait if it is held. A SIGTERM or SIGINT gives up.
func (r *runner) acquireLease(sigs <-chan os.Signal, began time.Time) (syscall.Signal, int) {
	id, err := lease.Self(r.lock.Record().DataDir)
	if err != nil {
		r.log.Error("cannot start: "+err.Error(), "datadir", r.dir)
		return 0, exitInternal
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
		l, err := r.lease.cli.Acquire(ctx, id, wait != 0)
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
		"etcd", r.lease.cli.Endpoints(), "stop_before", r.lease.timing.stop+r.lease.timing.margin, "kill_before", r.lease.timing.margin)
	return 0, 0
}

// leaseFailed logs why the lease cannot be had and returns run's status.
func (r *runner) leaseFailed(err error) int {
	var he *lease.HeldError
	var ue *lease.UnavailableError
	var re *lease.RefusedError
	switch {
	case errors.As(err, &he):
		h := he.Holder
		r.log.Error("cannot start: "+err.Error(), "datadir", r.dir, "lease_key", he.Key, "holder_host", h.Host, "holder_pid", h.PID,
			"since", h.Started.Format(time.RFC3339), "fencing_token", h.Token,
			"hint", "stop it on "+h.Host+" first, or wait: --wait DURATION")
		return r.flags.conflictExit
	case errors.As(err, &ue):
		r.log.Error("cannot start: "+err.Error(), "datadir", r.dir, "hint", "check --etcd and that a majority of etcd's members is up")
		return exitUnavailable
	case errors.As(err, &re):
		r.log.Error("cannot start: "+err.Error(), "datadir", r.dir)
		return exitInvalid
	}
	r.log.Error("cannot start: "+err.Error(), "datadir", r.dir)
	return exitInternal
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
	ls.term = time.NewTimer(time.Until(dl.Add(-ls.timing.stop - ls.timing.margin)))
	ls.kill = time.NewTimer(time.Until(dl.Add(-ls.timing.margin)))
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
		"deadline_in", time.Until(dl).Round(time.Millisecond), "last_error", ls.l.LastError())
	r.stop(syscall.SIGTERM, "lease deadline")
}

// leaseKill fires at deadline - margin, or at a loss: every process of the
// tree gets SIGKILL.
func (r *runner) leaseKill() {
	r.beginStop("lease deadline")
	t := pinTree(r.fencePID())
	defer t.Close()
	dl, _ := r.lease.l.Deadline()
	r.log.Warn("sending SIGKILL to the server's tree before the lease can end", "deadline_in", time.Until(dl).Round(time.Millisecond), "pids", t.PIDs())
	t.Signal(unix.SIGKILL)
}

// releaseLease revokes the lease once the tree is gone (so that a waiter on
// another host starts at once), and closes the connection.
func (r *runner) releaseLease() {
	if r.lease == nil || r.lease.cli == nil {
		return
	}
	if l := r.lease.l; l != nil {
		if err := l.Release(); err != nil {
			r.log.Warn("cannot revoke the lease: it ends after its TTL", "lease_key", l.Key(), "err", err)
		} else {
			r.log.Info("revoked the lease", "lease_key", l.Key(), "fencing_token", l.Token())
		}
	}
	r.lease.cli.Close()
}

// fencePID is the fence's PID, 0 without one.
func (r *runner) fencePID() int {
	if r.fence == nil {
		return 0
	}
	return r.fence.PID()
}

// feedFence tells the fence the latest kill time, half the margin before
// the deadline (after run's own SIGKILL), and the tree as it is now.
func (r *runner) feedFence() {
	if r.fence == nil || r.fenceBye {
		return
	}
	dl, _ := r.lease.l.Deadline()
	t := pinTree(r.fencePID())
	defer t.Close()
	if err := r.fence.Feed(dl.Add(-r.lease.timing.margin/2), t); err != nil {
		r.log.Warn(err.Error()+": if dirlockd is stopped now, its server may outlive the lease", "lease_key", r.lease.l.Key())
	}
}

// fenceIfAlone says bye to the fence once it is dirlockd's only child left:
// the server's tree is gone then, and the fence's exit lets reapAll see
// that nothing is left.
func (r *runner) fenceIfAlone() {
	if r.fence == nil || r.fenceBye {
		return
	}
	if kids := proc.Children(os.Getpid()); len(kids) == 1 && kids[0] == r.fence.PID() {
		r.fence.Bye()
		r.fenceBye = true
	}
}

// fenceExited handles the fence's exit: expected after bye; otherwise a
// stopped dirlockd would no longer be covered.
func (r *runner) fenceExited(ws unix.WaitStatus) {
	if !r.fenceBye {
		r.log.Warn("the fence process exited: if dirlockd is stopped now, its server may outlive the lease", "pid", r.fence.PID(), "status", describe(ws))
	}
	r.fence = nil
}
