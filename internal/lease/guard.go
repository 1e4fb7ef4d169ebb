package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/guard"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

// Record fields and server variables of the lease.
const (
	KeyField   = "lease_key"     // the record's lease key
	TokenField = "fencing_token" // the record's fencing token

	TokenEnv = "DIRLOCKD_FENCING_TOKEN"
	KeyEnv   = "DIRLOCKD_LEASE_KEY"
	TTLEnv   = "DIRLOCKD_LEASE_TTL"
)

// A Guard is the lease as a holder of the data directory takes it: the
// second, cross-host interlock, taken after the local one and released
// before it. dirlockd run holds it around a server as a guard.Guard
// (and guard.DeadlineGuard); stress takes it for each hold (Acquire,
// Revoke).
//
// Around a server it keeps the rule that the server's tree is dead before
// the lease can end: the stop signal at deadline - Stop - Margin, SIGKILL
// at deadline - Margin, where the deadline is the lease's own (the send
// time of the last renewal that succeeded + TTL); the watchdog process
// (StartWatchdog) SIGKILLs the tree if dirlockd is paused or dies. A lost
// lease is never used again: the server is stopped, and the next start
// gets a new lease and a new token. Its release, once the server's tree is
// gone, goes in order: the watchdog told, the lease revoked, the agent
// closed. Its methods are for one goroutine, the supervisor's.
type Guard struct {
	agent *Agent

	timing Timing
	log    *slog.Logger

	l        *Lease
	agentPID int // stays set once the agent is closed, to know its exit
	watchdog *Watchdog
	told     bool // the watchdog was told the tree is gone
	revoked  bool // the lease was revoked
	released bool // the lease was revoked and the agent closed
	lost     bool // Check has reported the loss
}

var _ guard.DeadlineGuard = (*Guard)(nil)

// Dial starts the agent for cfg (StartAgent) and asks who holds the key,
// before anything is written: no agent installed, a foreign key or no
// permission (RefusedError, NotFoundError), etcd unreachable
// (UnavailableError), or, unless the holder may wait, a key held by
// another holder (HeldError) fails here; a key held that the holder will
// wait for is logged. log, if not nil, hears what the guard does. The
// guard returned with an error, if not nil, is to be released: after an
// UnavailableError it can still be used, by a caller that waits for etcd.
func Dial(cfg Config, wait bool, log *slog.Logger) (*Guard, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a, err := StartAgent(cfg)
	if err != nil {
		return nil, err
	}
	g := &Guard{agent: a, timing: cfg.Timing, log: log, agentPID: a.PID()}
	log.Debug("started the etcd agent", "pid", a.PID())
	h, err := a.Holder(context.Background())
	switch {
	case err != nil || h == nil:
	case !wait:
		err = &HeldError{Key: a.Key(), Holder: *h}
	default:
		log.Info("the lease key is held elsewhere; waiting for it", "lease_key", a.Key(), "holder_host", h.Host, "holder_pid", h.PID,
			"since", h.Started.Format(time.RFC3339), "fencing_token", h.Token)
	}
	return g, err
}

// SetLog makes log hear what the guard does from now on.
func (g *Guard) SetLog(log *slog.Logger) { g.log = log }

// Proof is the lease's part in a takeover on shared storage
// (interlock.Options.TakeoverProof; docs/nfs.md, docs/lease.md): the record
// of another host's holder that did not stop cleanly names the lease key
// and fencing token it ran under. If etcd now has that key free, or under
// a higher token, that lease has ended, and its holder's tree died before
// it could (the watchdog sees to it), so the heartbeat watch would prove
// nothing more and is skipped. Anything else (another key, no token, etcd
// not answering, the same token still held) leaves the watch to decide.
func (g *Guard) Proof(rec *pidfile.Record) string {
	key, token := rec.Extra[KeyField], rec.Extra[TokenField]
	t, err := strconv.ParseInt(token, 10, 64)
	if key != g.agent.Key() || err != nil || t <= 0 {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.agent.cfg.DialTimeout)
	defer cancel()
	h, err := g.agent.Holder(ctx)
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

// Acquire takes the lease as the holder of dataDir, once the local
// interlock is held. wait is as interlock.Options.Wait: 0 fails with a
// *HeldError if another holder has the key, a negative wait waits until it
// is free or ctx ends, a positive one that long at most.
func (g *Guard) Acquire(ctx context.Context, dataDir string, wait time.Duration) error {
	id, err := Self(dataDir)
	if err != nil {
		return err
	}
	if wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	l, err := g.agent.Acquire(ctx, id, wait != 0)
	if err != nil {
		return err
	}
	g.l, g.lost, g.revoked = l, false, false
	g.log.Info("acquired the lease", "lease_key", l.Key(), "fencing_token", l.Token(), "lease_ttl", l.TTL(), "lease_id", strconv.FormatInt(l.ID(), 16),
		"etcd", g.agent.Endpoints(), "stop_before", g.timing.Stop+g.timing.Margin, "kill_before", g.timing.Margin)
	return nil
}

// Lease is the lease once acquired.
func (g *Guard) Lease() *Lease { return g.l }

// AdvanceTokenFile records the lease's fencing token in the token file of
// dataDir (AdvanceTokenFile), refusing a token below one that ran there.
func (g *Guard) AdvanceTokenFile(dataDir, pidfileName string) error {
	err := AdvanceTokenFile(dataDir, TokenFileName(pidfileName), g.l.Token(), g.l.Key())
	var tb *TokenBackError
	switch {
	case errors.As(err, &tb):
		g.log.Error("cannot start: "+err.Error(), "fence_file", tb.Path,
			"hint", "find out why etcd went back; remove the fence file only if no server of the old history can still run")
	case err != nil:
		g.log.Error("cannot start: " + err.Error())
	}
	return err
}

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

// Check re-reads the lease's deadlines, and reports a loss, the first time
// it is asked after it: etcd may already have ended the lease, and another
// host may hold the key, so nothing of the server may run now. Go's timers
// run on CLOCK_MONOTONIC, the deadline on CLOCK_BOOTTIME: after a suspend
// they fire late, the watchdog (which reads the clock itself) does not.
func (g *Guard) Check() guard.Event {
	dl, err := g.l.Deadline()
	now := Now()
	ev := guard.Event{Deadlines: true, StopIn: dl - g.timing.Stop - g.timing.Margin - now, KillIn: dl - g.timing.Margin - now, Why: "lease deadline"}
	if err != nil && !g.lost {
		g.lost = true
		g.log.Error("the lease is lost: killing the server's tree", "lease_key", g.l.Key(), "fencing_token", g.l.Token(), "err", err)
		ev.Lost, ev.Kill = err, true
	}
	return ev
}

// StartWatchdog starts the watchdog process (package function
// StartWatchdog): this executable's hidden command WatchdogCommand, its
// kill time half the margin before the deadline, after the guard's own
// SIGKILL.
func (g *Guard) StartWatchdog() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start the fence: %w", err)
	}
	dl, _ := g.l.Deadline()
	w, err := StartWatchdog(dl-g.timing.Margin/2, self, "dirlockd", WatchdogCommand)
	if err != nil {
		return err
	}
	g.watchdog = w
	g.log.Debug("started the fence process", "pid", w.PID())
	return nil
}

// Tree tells the watchdog the latest kill time, half the margin before the
// deadline (after the guard's own SIGKILL), and the tree as it is now.
func (g *Guard) Tree(t proc.Tree) {
	if g.watchdog == nil || g.told {
		return
	}
	dl, _ := g.l.Deadline()
	if err := g.watchdog.Feed(dl-g.timing.Margin/2, t); err != nil {
		g.log.Warn(err.Error()+": if dirlockd is stopped now, its server may outlive the lease", "lease_key", g.l.Key())
	}
}

// Overdue logs why the server is stopped, or killed, at a deadline. A
// renewal that succeeds after the stop moves the SIGKILL but does not undo
// the stop: a lease that may have been lost is not used again.
func (g *Guard) Overdue(kill bool, pids []int) {
	dl, _ := g.l.Deadline()
	left := dl - Now()
	switch {
	case !kill:
		g.log.Error("the lease was not renewed in time: stopping the server before it can end", "lease_key", g.l.Key(),
			"deadline_in", max(left, 0).Round(time.Millisecond), "renewals", g.l.LastError())
	case left > 0:
		g.log.Warn("sending SIGKILL to the server's tree before the lease can end", "deadline_in", left.Round(time.Millisecond), "pids", pids)
	default:
		g.log.Warn("sending SIGKILL to the server's tree: the lease's deadline has passed", "pids", pids)
	}
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

// HelperExited handles the exit of pid, and reports whether it was the
// watchdog or the agent. The agent gone before the release leaves nothing
// to renew the lease: the server is stopped while the lease is still ours,
// the kill deadline standing.
func (g *Guard) HelperExited(pid int, ws unix.WaitStatus) (bool, guard.Event) {
	switch {
	case pid == 0:
		return false, guard.Event{}
	case g.watchdog != nil && pid == g.watchdog.PID():
		g.watchdog = nil
		if !g.told {
			// A stopped dirlockd would no longer be covered.
			g.log.Warn("the fence process exited: if dirlockd is stopped now, its server may outlive the lease", "pid", pid, "status", proc.Describe(ws))
		}
		return true, guard.Event{}
	case pid == g.agentPID:
		g.agentPID = 0
		if g.released {
			return true, guard.Event{}
		}
		g.log.Error("the etcd agent exited: stopping the server before the lease can end", "pid", pid, "status", proc.Describe(ws))
		return true, guard.Event{Stop: "the etcd agent exited"}
	}
	return false, guard.Event{}
}

// Revoke stops renewing the lease and revokes it (Lease.Release), so that
// a waiter on another host starts at once, keeping the agent for the next
// Acquire. A revoke that fails leaves the lease to end after its TTL.
func (g *Guard) Revoke() error {
	if g.l == nil || g.revoked {
		return nil
	}
	g.revoked = true
	l := g.l
	err := l.Release()
	if err != nil {
		g.log.Warn("cannot revoke the lease: it ends after its TTL", "lease_key", l.Key(), "err", err)
	} else {
		g.log.Info("revoked the lease", "lease_key", l.Key(), "fencing_token", l.Token())
	}
	return err
}

// Release ends the guard once the server's tree is gone: the watchdog
// told, the lease revoked (Revoke), the agent closed. A revoke that fails
// is only a warning: the lease ends after its TTL. It does nothing the
// second time, or on a nil guard.
func (g *Guard) Release() error {
	if g == nil || g.released {
		return nil
	}
	g.released = true
	if g.watchdog != nil && !g.told {
		g.watchdog.Bye()
		g.told = true
	}
	g.Revoke()
	g.agent.Close()
	return nil
}

// Timing is when a holder renews the lease, and how long before its
// deadline the server is stopped and dead.
type Timing struct {
	Renew  time.Duration // how often the lease is renewed; 0: TTL/3
	Stop   time.Duration // the server's budget to stop, before Margin (--lease-stop-timeout)
	Margin time.Duration // how long before the lease's deadline the tree is dead
}

// The lease's share of its TTL when not said otherwise: renewal every
// TTL/3, the stop signal a fifth of the TTL before the deadline (plus the
// margin), SIGKILL a tenth before it. That leaves over a third of the TTL
// for a renewal that fails and the retry after it, before the server is
// stopped.
const (
	renewShare  = 3
	stopShare   = 5
	marginShare = 10
)

// NewTiming derives the timing from the TTL and the stop budget (0:
// TTL/5), and refuses a stop budget that leaves no room: a renewal
// interval, the stop budget and the margin must fit in the TTL, or the
// server would be stopped between two renewals that both succeed.
func NewTiming(ttl, stop time.Duration) (Timing, error) {
	t := Timing{Renew: ttl / renewShare, Stop: stop, Margin: ttl / marginShare}
	if t.Stop == 0 {
		t.Stop = ttl / stopShare
	}
	if t.Renew+t.Stop+t.Margin >= ttl {
		return t, fmt.Errorf("--lease-stop-timeout %v leaves no room in --lease-ttl %v: the renewal interval (%v, TTL/3), the stop timeout and the margin (%v, TTL/10) must add up to less than the TTL; want a stop timeout below %v or a longer TTL",
			t.Stop, ttl, t.Renew, t.Margin, ttl-t.Renew-t.Margin)
	}
	return t, nil
}
