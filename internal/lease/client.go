package lease

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
)

// Agent is the parent's handle on an agent: a dirlockd-etcd process
// (Start), or, in tests, anything that serves the protocol (Connect).
type Agent struct {
	cfg Config
	w   io.WriteCloser
	// OnRenew, if set before Acquire, is called after each renewal that
	// moved a lease's deadline, with its send and receipt times.
	OnRenew func(sent, received time.Duration)

	wmu sync.Mutex // one request line at a time

	mu      sync.Mutex
	next    int64
	pending map[int64]chan Reply
	gone    error         // set once the agent's output ended
	done    chan struct{} // closed then

	proc *proc.Pinned // the agent's process; nil for Connect
}

// Start starts the agent at path and connects it to etcd. The agent gets
// no descriptor but its pipes and stderr, and no DIRLOCKD_* variable: it
// is no witness of any data directory. It runs in a process group of its
// own, out of reach of a terminal's Ctrl-C, and ignores SIGTERM: it ends
// when its standard input closes, so that the parent can revoke its lease
// after a stop. It never renews or revokes on its own, so a parent that
// dies leaves its lease to run out.
func Start(path string, cfg Config) (*Agent, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start the etcd agent: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("start the etcd agent: %w", err)
	}
	// syscall.ForkExec rather than os/exec, whose StartProcess forks a
	// throw-away child to probe for pidfds.
	pid, err := syscall.ForkExec(path, []string{"dirlockd-etcd"}, &syscall.ProcAttr{
		Env:   agentEnv(os.Environ()),
		Files: []uintptr{inR.Fd(), outW.Fd(), os.Stderr.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("start the etcd agent %s: %w", path, err)
	}
	// Our own unreaped child: its PID cannot be recycled yet.
	p, ok := proc.PinChild(pid, pid)
	if !ok {
		p = proc.Adopt(pid, -1)
	}
	a := connect(outR, inW, cfg)
	a.proc = &p
	if err := a.dial(); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// agentEnv is the environment without what would make the agent look like
// a process of a server (DIRLOCKD_*, NOTIFY_SOCKET).
func agentEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "DIRLOCKD_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			out = append(out, kv)
		}
	}
	return out
}

// Connect talks the protocol over r and w, with whatever serves it at the
// other end (agent.Serve, in tests), and connects to etcd.
func Connect(r io.Reader, w io.WriteCloser, cfg Config) (*Agent, error) {
	a := connect(r, w, cfg)
	if err := a.dial(); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

func connect(r io.Reader, w io.WriteCloser, cfg Config) *Agent {
	a := &Agent{cfg: cfg, w: w, pending: map[int64]chan Reply{}, done: make(chan struct{})}
	go a.read(r)
	return a
}

func (a *Agent) dial() error {
	_, err := a.call(context.Background(), Request{Op: OpDial, Config: &a.cfg})
	return err
}

// read delivers replies until the agent's output ends.
func (a *Agent) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rep Reply
		if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
			continue // not ours (a stray write); the request times out
		}
		a.mu.Lock()
		ch := a.pending[rep.ID]
		delete(a.pending, rep.ID)
		a.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
	a.mu.Lock()
	a.gone = ErrAgentGone
	if a.proc != nil {
		a.gone = fmt.Errorf("%w (PID %d)", ErrAgentGone, a.proc.PID)
	}
	a.mu.Unlock()
	close(a.done)
}

// cancelPatience is how long call waits for the agent to answer a cancel.
const cancelPatience = 2 * time.Second

// call sends req and waits for its reply, or for ctx: then it asks the
// agent to cancel the request and waits for that reply.
func (a *Agent) call(ctx context.Context, req Request) (Reply, error) {
	ch := make(chan Reply, 1)
	a.mu.Lock()
	if a.gone != nil {
		a.mu.Unlock()
		return Reply{}, a.gone
	}
	a.next++
	req.ID = a.next
	a.pending[req.ID] = ch
	a.mu.Unlock()
	if err := a.send(req); err != nil {
		return Reply{}, err
	}
	var rep Reply
	select {
	case rep = <-ch:
	case <-a.done:
		return Reply{}, a.goneErr()
	case <-ctx.Done():
		// The agent's answer to a cancel says how the request ended (a
		// wait that ended names the holder); an agent that does not
		// answer it soon (stopped) is not waited for.
		a.send(Request{Op: OpCancel, Ref: req.ID})
		select {
		case rep = <-ch:
		case <-a.done:
			return Reply{}, a.goneErr()
		case <-time.After(cancelPatience):
			a.mu.Lock()
			delete(a.pending, req.ID)
			a.mu.Unlock()
			return Reply{}, fmt.Errorf("%w (the etcd agent did not answer)", ctx.Err())
		}
	}
	if rep.Err != nil {
		return rep, rep.Err.decode(ctx.Err())
	}
	return rep, nil
}

func (a *Agent) goneErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gone
}

func (a *Agent) send(req Request) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if _, err := a.w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("%w: %v", ErrAgentGone, err)
	}
	return nil
}

// PID is the agent process's PID, 0 for Connect.
func (a *Agent) PID() int {
	if a.proc == nil {
		return 0
	}
	return a.proc.PID
}

// Endpoints returns the endpoints, for messages.
func (a *Agent) Endpoints() string { return strings.Join(a.cfg.Endpoints, ",") }

// Key returns the lock key.
func (a *Agent) Key() string { return a.cfg.Key }

// Holder returns the current holder of the key, or nil when it is free.
func (a *Agent) Holder(ctx context.Context) (*Holder, error) {
	rep, err := a.call(ctx, Request{Op: OpHolder})
	return rep.Holder, err
}

// WaitFree blocks, on a watch, until the key is free (held false: nil
// holder) or held (held true: its holder), or until ctx ends.
func (a *Agent) WaitFor(ctx context.Context, held bool) (*Holder, error) {
	want := "free"
	if held {
		want = "held"
	}
	rep, err := a.call(ctx, Request{Op: OpWatch, Want: want})
	return rep.Holder, err
}

// Acquire takes the lock key for id under a new lease; the key held by
// another holder fails with a *HeldError, unless wait is set: then it
// blocks, watching the key, until it is free and taken or ctx ends. etcd
// not answering fails with an *UnavailableError (a wait rides that out), a
// refusal with a *RefusedError. The returned Lease is renewed from this
// process until Release.
func (a *Agent) Acquire(ctx context.Context, id Identity, wait bool) (*Lease, error) {
	rep, err := a.call(ctx, Request{Op: OpAcquire, Identity: &id, Wait: wait})
	var he *HeldError
	if errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &he) {
		// The wait ended inside an attempt, with etcd's answer still to
		// come (the agent answers the cancel with "canceled"): etcd did
		// not answer in time, as when it ends between two attempts.
		err = &UnavailableError{Endpoints: a.cfg.Endpoints, Err: fmt.Errorf("no answer before the wait ended: %w", err)}
	}
	if err != nil {
		return nil, err
	}
	g := rep.Lease
	if g == nil {
		return nil, errors.New("the etcd agent granted no lease")
	}
	l := &Lease{a: a, g: *g}
	l.Keeper = Keep(l.renew, Renewal{Sent: g.Sent, TTL: g.TTL}, a.cfg.renew(), a.OnRenew)
	gctx, cancel := context.WithCancel(context.Background())
	l.stopGone = cancel
	go l.gone(gctx)
	return l, nil
}

// Close ends the agent: its standard input closes, and it exits (without
// touching a lease it holds, which then runs out). Close waits for the
// exit, and SIGKILLs an agent that takes more than 5 s.
func (a *Agent) Close() error {
	a.w.Close()
	if a.proc == nil {
		return nil
	}
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		a.proc.Signal(unix.SIGKILL)
	}
	if a.proc.Valid() {
		// Reap it, unless a reaper of all children (run's) did.
		a.proc.WaitExit(5 * time.Second)
		a.proc.Reap()
		a.proc.Close()
		*a.proc = proc.Adopt(a.proc.PID, -1)
	}
	return nil
}

// Lease is a held lock key and the lease under it, renewed through the
// agent by the embedded Keeper.
type Lease struct {
	*Keeper
	a        *Agent
	g        Granted
	stopGone context.CancelFunc
}

// gone watches, through the agent, for the lock key to be deleted while
// the lease is held: etcd can end a lease before the deadline its renewals
// proved (an etcd 3.4 leader that resumes after a pause revokes leases by
// its stale expiry times), and the holder must then stop at once, not at
// its next renewal, when "lease not found" would tell it.
func (l *Lease) gone(ctx context.Context) {
	if _, err := l.a.call(ctx, Request{Op: OpGone}); err == nil {
		l.Keeper.lose(fmt.Errorf("%w: etcd deleted the lock key before the lease's deadline", ErrLost))
	}
}

// Token is the fencing token: the lock key's create revision, which
// strictly increases with every new holder.
func (l *Lease) Token() int64 { return l.g.Token }

// TTL is the TTL etcd granted.
func (l *Lease) TTL() time.Duration { return l.g.TTL }

// ID is etcd's lease ID.
func (l *Lease) ID() int64 { return l.g.ID }

// Key is the lock key.
func (l *Lease) Key() string { return l.a.cfg.Key }

func (l *Lease) renew(ctx context.Context, until time.Duration) (Renewal, error) {
	rep, err := l.a.call(ctx, Request{Op: OpRenew, Until: until})
	if err != nil {
		return Renewal{}, err
	}
	if rep.Renewal == nil {
		return Renewal{}, errors.New("the etcd agent answered a renewal with nothing")
	}
	return *rep.Renewal, nil
}

// Release stops renewing and revokes the lease, which deletes the lock key,
// so that a waiter on another host starts at once rather than after the
// TTL. A lost lease is revoked too, in case etcd still has it. Release
// returns the revoke's error, if any.
//
// The revoke only saves a waiter time: etcd ends the lease by itself once
// its deadline passes. So it may take until that deadline, or one renewal
// interval for a lease that is already past it (lost), and never more than
// the dial timeout: a holder cut off from etcd releases its directory that
// much after its server died, not a revoke's timeout or two later.
func (l *Lease) Release() error {
	dl, _ := l.Keeper.Deadline()
	l.stopGone()
	l.Keeper.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), releaseBudget(dl-Now(), l.a.cfg.renew(), l.a.cfg.DialTimeout))
	defer cancel()
	_, err := l.a.call(ctx, Request{Op: OpRevoke})
	return err
}

// releaseBudget is how long Release may take with left until the lease's
// deadline: left, but at least a renewal interval and at most the dial
// timeout.
func releaseBudget(left, every, dial time.Duration) time.Duration {
	if dial <= 0 {
		dial = 5 * time.Second
	}
	return min(max(left, every), dial)
}
