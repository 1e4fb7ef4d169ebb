package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Lease is a held lock key and the lease under it.
type Lease struct {
	c     *Client
	id    clientv3.LeaseID
	token int64
	ttl   time.Duration

	mu       sync.Mutex
	deadline time.Time // send time of the last successful renewal + TTL, monotonic
	err      error     // why the lease is lost; nil while held
	lastErr  error     // the last renewal's failure, if the last one failed
	changed  chan struct{}

	stop chan struct{}
	done chan struct{}
}

func newLease(c *Client, id clientv3.LeaseID, token int64, ttl time.Duration, sent time.Time) *Lease {
	l := &Lease{c: c, id: id, token: token, ttl: ttl, deadline: sent.Add(ttl),
		changed: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go l.keep()
	return l
}

// Token is the fencing token: the lock key's create revision, which
// strictly increases with every new holder.
func (l *Lease) Token() int64 { return l.token }

// TTL is the TTL etcd granted.
func (l *Lease) TTL() time.Duration { return l.ttl }

// ID is etcd's lease ID.
func (l *Lease) ID() int64 { return int64(l.id) }

// Key is the lock key.
func (l *Lease) Key() string { return l.c.cfg.Key }

// Deadline returns the time before which etcd cannot have ended the lease
// (on the monotonic clock: compare it with time.Now, never serialise it),
// and why the lease is lost once it is (wrapping ErrLost).
func (l *Lease) Deadline() (time.Time, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline, l.err
}

// LastError returns why the last renewal failed, nil if it succeeded.
func (l *Lease) LastError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

// Changed receives a value after each renewal that moved the deadline, and
// once the lease is lost. Values coalesce: read Deadline for the latest.
func (l *Lease) Changed() <-chan struct{} { return l.changed }

func (l *Lease) poke() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// maxInFlight bounds the renewals under way at once.
const maxInFlight = 4

// renewal is the outcome of one KeepAliveOnce.
type renewal struct {
	sent, received time.Time
	ttl            time.Duration
	err            error
}

// keep renews the lease every renewal interval, counted from the send time
// of the last renewal that succeeded, until Release or the loss. Each
// attempt may run until the deadline, since a slow answer still moves it;
// but an attempt that has not been answered after half an interval gets
// company: a member that is stopped (its TCP connection alive, its answers
// never coming) or a leader being re-elected must not hold the renewals
// hostage, and the balancer sends the next attempt elsewhere.
func (l *Lease) keep() {
	defer close(l.done)
	every := l.c.cfg.renew()
	patience := max(every/2, 250*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends the attempts still under way
	results := make(chan renewal, maxInFlight)
	inFlight := 0
	dl, _ := l.Deadline()
	newest := dl.Add(-l.ttl) // send time of the newest success: the grant's
	next := time.NewTimer(every)
	defer next.Stop()
	lose := time.NewTimer(time.Until(dl))
	defer lose.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-lose.C:
			l.lose(fmt.Errorf("%w: no renewal succeeded before its deadline (last error: %v)", ErrLost, l.LastError()))
			return
		case <-next.C:
			if inFlight < maxInFlight {
				inFlight++
				go l.renew(ctx, dl, results)
			}
			next.Reset(patience)
		case r := <-results:
			inFlight--
			switch {
			case r.err == nil:
				if r.sent.After(newest) {
					newest = r.sent
					next.Reset(time.Until(r.sent.Add(every)))
				}
				if d := r.sent.Add(r.ttl); d.After(dl) {
					dl = d
					l.mu.Lock()
					l.deadline, l.lastErr = d, nil
					l.mu.Unlock()
					lose.Reset(time.Until(d))
					l.poke()
					if h := l.c.cfg.onRenew; h != nil {
						h(r.sent, r.received)
					}
				}
			case errors.Is(r.err, ErrLost):
				l.lose(r.err)
				return
			default:
				l.mu.Lock()
				l.lastErr = r.err
				l.mu.Unlock()
				if inFlight == 0 {
					next.Reset(0)
				}
			}
		}
	}
}

// renew sends one KeepAliveOnce, which may take until the deadline dl. "No
// leader" is a failure: etcd 3.4 before 3.4.31 lets a partitioned member
// answer renewals it has no right to.
func (l *Lease) renew(ctx context.Context, dl time.Time, out chan<- renewal) {
	ctx, cancel := context.WithDeadline(clientv3.WithRequireLeader(ctx), dl)
	defer cancel()
	sent := time.Now()
	resp, err := l.c.cli.KeepAliveOnce(ctx, l.id)
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		err = fmt.Errorf("%w: etcd says it has ended", ErrLost)
	case err == nil:
		out <- renewal{sent: sent, received: time.Now(), ttl: time.Duration(resp.TTL) * time.Second}
		return
	}
	out <- renewal{sent: sent, err: err}
}

func (l *Lease) lose(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
	l.poke()
}

// Release stops renewing and revokes the lease, which deletes the lock key,
// so that a waiter on another host starts at once rather than after the
// TTL. A lost lease is revoked too, in case etcd still has it: it must
// never serve again. Release returns the revoke's error, if any.
func (l *Lease) Release() error {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
	l.lose(fmt.Errorf("%w: released", ErrLost))
	if err := l.c.revoke(l.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return l.c.failed("revoke the lease", err)
	}
	return nil
}
