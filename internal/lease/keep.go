package lease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// RenewFunc sends one renewal, which may take until the time until (on
// Now's clock): the renewal the agent makes when asked, or, in a test, one
// made in process.
type RenewFunc func(ctx context.Context, until time.Duration) (Renewal, error)

// Keeper renews a lease and keeps its deadline: the send time of the last
// renewal that succeeded + TTL, on Now's clock. It never trusts a
// keepalive channel or a response's arrival, which come after the server
// may already have ended the lease. Once the deadline passes without a
// renewal, the lease is lost for good.
type Keeper struct {
	renew   RenewFunc
	ttl     time.Duration
	every   time.Duration
	onRenew func(sent, received time.Duration)

	mu       sync.Mutex
	deadline time.Duration // on Now's clock
	newest   time.Duration // the send time of the last renewal that succeeded (or the grant)
	err      error         // why the lease is lost; nil while held
	lastErr  error         // the last renewal's failure, if the last one failed
	changed  chan struct{}

	stop chan struct{}
	done chan struct{}
}

// Keep starts renewing every interval, from a lease granted (or last
// renewed) at first.
func Keep(renew RenewFunc, first Renewal, every time.Duration, onRenew func(sent, received time.Duration)) *Keeper {
	k := &Keeper{renew: renew, ttl: first.TTL, every: every, onRenew: onRenew, deadline: first.Sent + first.TTL, newest: first.Sent,
		changed: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go k.keep(first.Sent)
	return k
}

// Deadline returns the time, on Now's clock, before which etcd cannot have
// ended the lease, and why the lease is lost once it is (wrapping ErrLost).
func (k *Keeper) Deadline() (time.Duration, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.deadline, k.err
}

// LastError says why renewals have not succeeded lately, nil if the last
// one succeeded and the next is not overdue. Renewals that got no answer
// at all (a member cut off, or stopped) are said so, with how long since
// the last one that succeeded was sent: "no answer in 2.1s".
func (k *Keeper) LastError() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	since := Now() - k.newest
	switch {
	case since <= k.every:
		return k.lastErr
	case k.lastErr == nil:
		return fmt.Errorf("no answer in %v", since.Round(time.Millisecond))
	}
	return fmt.Errorf("no renewal succeeded in %v: %w", since.Round(time.Millisecond), k.lastErr)
}

// Changed receives a value after each renewal that moved the deadline, and
// once the lease is lost. Values coalesce: read Deadline for the latest.
func (k *Keeper) Changed() <-chan struct{} { return k.changed }

func (k *Keeper) poke() {
	select {
	case k.changed <- struct{}{}:
	default:
	}
}

// Stop stops renewing; the lease counts as lost from now on.
func (k *Keeper) Stop() {
	select {
	case <-k.stop:
	default:
		close(k.stop)
	}
	<-k.done
	k.lose(fmt.Errorf("%w: released", ErrLost))
}

// maxInFlight bounds the renewals under way at once. An attempt that a
// follower forwards to a stopped leader can hang for etcd's request timeout
// (5 s + 2 election timeouts), longer than a short TTL, and so can one that
// etcd's balancer sends to the stopped member itself. When a new attempt is
// due and the cap is reached, the oldest attempt is cancelled to make room:
// its answer would prove the earliest deadline of all, and a cap that held
// new attempts back until the old ones gave up would hold them back until
// the deadline.
const maxInFlight = 8

// retryAfter is the least time from a failed renewal to the next attempt.
// A member without a leader answers "no leader" at once; the keeper used to
// ask again at once: 704,201 times in 2 s in process (TestKeeperRetry),
// 12,042 times through the agent to a real member in the 8 s from its
// followers' stop to the deadline (TestNoLeaderRetry). A member learns of
// a new leader from its first heartbeat, so asking every 200 ms finds the
// new leader soon after the election.
const retryAfter = 200 * time.Millisecond

// result is the outcome of one renewal.
type result struct {
	Renewal
	attempt  int
	received time.Duration
	err      error
}

// attempt is a renewal under way.
type attempt struct {
	n      int
	cancel context.CancelFunc
}

// keep renews every interval, counted from the send time of the last
// renewal that succeeded, until Stop or the loss. Each attempt may run
// until the deadline, since a slow answer still moves it; but an attempt
// that has not been answered after half an interval gets company: a member
// that is stopped (its TCP connection alive, its answers never coming) or a
// leader being re-elected must not hold the renewals hostage, and etcd's
// balancer sends the next attempt elsewhere.
//
// Go's timers stand still while the host is suspended and Now does not, so
// no timer here is trusted for more than a second: each wake-up reads Now.
func (k *Keeper) keep(newest time.Duration) {
	defer close(k.done)
	patience := max(k.every/2, 250*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends the attempts still under way
	results := make(chan result, maxInFlight)
	var inFlight []attempt // oldest first
	launched := 0
	dl, _ := k.Deadline()
	nextAt := newest + k.every
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		now := Now()
		if now >= dl {
			k.lose(fmt.Errorf("%w: no renewal succeeded before its deadline (%v)", ErrLost, k.LastError()))
			return
		}
		if now >= nextAt {
			if len(inFlight) == maxInFlight {
				inFlight[0].cancel()
				inFlight = inFlight[1:]
			}
			launched++
			actx, acancel := context.WithCancel(ctx)
			inFlight = append(inFlight, attempt{n: launched, cancel: acancel})
			go func(n int, until time.Duration) {
				r, err := k.renew(actx, until)
				acancel()
				select {
				case results <- result{Renewal: r, attempt: n, received: Now(), err: err}:
				case <-k.done: // gone; cancelled attempts may outnumber results' room
				}
			}(launched, dl)
			nextAt = now + patience
		}
		tick.Reset(min(nextAt-now, dl-now, time.Second))
		select {
		case <-k.stop:
			return
		case <-tick.C:
		case r := <-results:
			inFlight = slices.DeleteFunc(inFlight, func(a attempt) bool { return a.n == r.attempt })
			switch {
			case r.err == nil:
				if r.Sent > newest {
					newest = r.Sent
					nextAt = r.Sent + k.every
					k.mu.Lock()
					k.newest = newest
					k.mu.Unlock()
				}
				if d := r.Sent + r.TTL; d > dl {
					dl = d
					k.mu.Lock()
					k.deadline, k.lastErr = d, nil
					k.mu.Unlock()
					k.poke()
					if k.onRenew != nil {
						k.onRenew(r.Sent, r.received)
					}
				}
			case errors.Is(r.err, ErrLost):
				k.lose(r.err)
				return
			case errors.Is(r.err, context.Canceled) && ctx.Err() == nil:
				// Cancelled to make room for a newer attempt: no news.
			default:
				k.mu.Lock()
				k.lastErr = r.err
				k.mu.Unlock()
				nextAt = min(nextAt, r.received+retryAfter)
			}
		}
	}
}

func (k *Keeper) lose(err error) {
	k.mu.Lock()
	if k.err == nil {
		k.err = err
	}
	k.mu.Unlock()
	k.poke()
}
