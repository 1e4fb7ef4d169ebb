package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestWireErrors: every error a caller branches on crosses the pipe as the
// type it was, with the same text.
func TestWireErrors(t *testing.T) {
	held := &HeldError{Key: "/k", Holder: Holder{Identity: Identity{Host: "alpha", PID: 7, Started: time.Unix(1e9, 0).UTC()}, Token: 42, Lease: 9}}
	waited := fmt.Errorf("waiting for lease key %q: %w (%w)", "/k", context.Canceled, held)
	for _, c := range []struct {
		err   error
		check func(error) bool
		text  bool // the text survives as it was
	}{
		{held, func(e error) bool {
			var h *HeldError
			return errors.As(e, &h) && h.Holder.PID == 7 && h.Holder.Token == 42
		}, true},
		{waited, func(e error) bool { var h *HeldError; return errors.As(e, &h) && errors.Is(e, context.Canceled) }, true},
		{&UnavailableError{Endpoints: []string{"a:1", "b:2"}, Err: errors.New("grant a lease: context deadline exceeded")},
			func(e error) bool { var u *UnavailableError; return errors.As(e, &u) && len(u.Endpoints) == 2 }, true},
		{&RefusedError{Key: "/k", Problem: "cannot put", Fix: "grant it", Err: errors.New("permission denied")},
			func(e error) bool { var r *RefusedError; return errors.As(e, &r) && r.Fix == "grant it" }, true},
		{fmt.Errorf("%w: etcd says it has ended", ErrLost), func(e error) bool { return errors.Is(e, ErrLost) }, true},
		{context.Canceled, func(e error) bool { return errors.Is(e, context.Canceled) }, true},
		{errors.New("something else"), func(e error) bool { return e != nil }, true},
	} {
		b, err := json.Marshal(Reply{ID: 1, Err: EncodeError(c.err)})
		if err != nil {
			t.Fatal(err)
		}
		var rep Reply
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		got := rep.Err.decode(nil)
		if !c.check(got) || (c.text && got.Error() != c.err.Error()) {
			t.Errorf("%T %q came back as %T %q", c.err, c.err, got, got)
		}
	}
	// A wait that the caller's deadline ended says so, though the agent
	// only saw a cancel.
	if got := EncodeError(waited).decode(context.DeadlineExceeded); !errors.Is(got, context.DeadlineExceeded) {
		t.Errorf("a wait ended by the deadline came back as %q", got)
	}
}

// TestKeeperDeadline: the deadline is the send time of the last renewal
// that succeeded + TTL; with every renewal failing the lease is lost at
// that deadline, not before, and not much after. 3 rounds.
func TestKeeperDeadline(t *testing.T) {
	for round := range 3 {
		var ok atomic.Bool
		ok.Store(true)
		var lastSent atomic.Int64
		renew := func(ctx context.Context, until time.Duration) (Renewal, error) {
			sent := Now()
			if !ok.Load() {
				return Renewal{}, errors.New("etcd does not answer")
			}
			lastSent.Store(int64(sent))
			return Renewal{Sent: sent, TTL: time.Second}, nil
		}
		k := Keep(renew, Renewal{Sent: Now(), TTL: time.Second}, 200*time.Millisecond, nil)
		time.Sleep(500 * time.Millisecond)
		ok.Store(false)
		for {
			dl, err := k.Deadline()
			if err != nil {
				lostAt := Now()
				want := time.Duration(lastSent.Load()) + time.Second
				if !errors.Is(err, ErrLost) || lostAt < want || lostAt > want+500*time.Millisecond {
					t.Fatalf("round %d: lost (%v) %v after the deadline", round, err, lostAt-want)
				}
				break
			}
			if dl != time.Duration(lastSent.Load())+time.Second && lastSent.Load() != 0 {
				t.Fatalf("round %d: deadline %v, want the last send %v + TTL", round, dl, time.Duration(lastSent.Load()))
			}
			select {
			case <-k.Changed():
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: not lost 5s after renewals stopped succeeding", round)
			}
		}
		k.Stop()
	}
}

// TestKeeperCompany: a renewal that is never answered (a stopped member)
// does not hold the others hostage: the next attempt goes out after half an
// interval and keeps the lease. 3 rounds.
func TestKeeperCompany(t *testing.T) {
	for round := range 3 {
		var calls atomic.Int32
		renew := func(ctx context.Context, until time.Duration) (Renewal, error) {
			if calls.Add(1) == 1 {
				<-ctx.Done() // the first one never answers
				return Renewal{}, ctx.Err()
			}
			return Renewal{Sent: Now(), TTL: time.Second}, nil
		}
		k := Keep(renew, Renewal{Sent: Now(), TTL: time.Second}, 300*time.Millisecond, nil)
		end := time.After(2 * time.Second)
		for done := false; !done; {
			select {
			case <-k.Changed():
				if _, err := k.Deadline(); err != nil {
					t.Fatalf("round %d: lost behind an unanswered renewal: %v", round, err)
				}
			case <-end:
				done = true
			}
		}
		if _, err := k.Deadline(); err != nil || calls.Load() < 3 {
			t.Fatalf("round %d: %d renewals, err %v", round, calls.Load(), err)
		}
		k.Stop()
	}
}

// TestKeeperRetry: a renewal that fails at once (a member without a
// leader answers "no leader" at once) is retried after retryAfter, not at
// once: over 2 s of failures, at most one attempt per retryAfter (the old
// keeper made over 300,000). 3 rounds.
func TestKeeperRetry(t *testing.T) {
	for round := range 3 {
		var failing atomic.Bool
		var calls atomic.Int64
		renew := func(ctx context.Context, until time.Duration) (Renewal, error) {
			if failing.Load() {
				calls.Add(1)
				return Renewal{}, errors.New("etcdserver: no leader")
			}
			return Renewal{Sent: Now(), TTL: 2 * time.Second}, nil
		}
		k := Keep(renew, Renewal{Sent: Now(), TTL: 2 * time.Second}, 500*time.Millisecond, nil)
		failing.Store(true)
		start := Now()
		lostAt, err := waitKeeperLost(k, 10*time.Second)
		if err == nil {
			t.Fatalf("round %d: not lost 10s after renewals began to fail", round)
		}
		max := int64((lostAt-start)/retryAfter) + 2
		t.Logf("round %d: %d attempts in the %v before the loss (at most %d wanted)", round, calls.Load(), (lostAt - start).Round(time.Millisecond), max)
		if n := calls.Load(); n < 3 || n > max {
			t.Fatalf("round %d: %d attempts in %v, want 3 to %d", round, n, lostAt-start, max)
		}
		k.Stop()
	}
}

// TestKeeperCap: attempts that never answer (forwarded to a stopped
// leader) never keep a new one from going out: with 12 attempts unanswered
// over 3 s, more than maxInFlight, the first that is answered afterwards
// still keeps the lease (TTL 4 s), and no more than maxInFlight (+1 while the
// oldest ends) are under way at once. The old keeper waited for a slot until the deadline and lost
// the lease. 3 rounds.
func TestKeeperCap(t *testing.T) {
	for round := range 3 {
		var hang atomic.Bool
		var under, most atomic.Int32
		renew := func(ctx context.Context, until time.Duration) (Renewal, error) {
			n := under.Add(1)
			defer under.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			if hang.Load() {
				select {
				case <-ctx.Done():
				case <-time.After(until - Now()):
				}
				return Renewal{}, errors.New("no answer")
			}
			return Renewal{Sent: Now(), TTL: 4 * time.Second}, nil
		}
		k := Keep(renew, Renewal{Sent: Now(), TTL: 4 * time.Second}, 400*time.Millisecond, nil)
		hang.Store(true)
		time.Sleep(3 * time.Second)
		hang.Store(false)
		dl0, _ := k.Deadline()
		for end := time.Now().Add(5 * time.Second); ; {
			dl, err := k.Deadline()
			if err != nil {
				t.Fatalf("round %d: lost behind unanswered attempts (at most %d at once): %v", round, most.Load(), err)
			}
			if dl > dl0 {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("round %d: no renewal 5s after etcd answered again", round)
			}
			select {
			case <-k.Changed():
			case <-time.After(100 * time.Millisecond):
			}
		}
		// A cancelled attempt takes a moment to end: one more may be
		// under way meanwhile.
		if m := most.Load(); m < maxInFlight || m > maxInFlight+1 {
			t.Fatalf("round %d: %d attempts under way at once, want the cap, %d (+1)", round, m, maxInFlight)
		}
		k.Stop()
	}
}

// waitKeeperLost waits until k is lost and returns when, on Now's clock.
func waitKeeperLost(k *Keeper, timeout time.Duration) (time.Duration, error) {
	end := time.After(timeout)
	for {
		if _, err := k.Deadline(); err != nil {
			return Now(), err
		}
		select {
		case <-k.Changed():
		case <-end:
			return Now(), nil
		}
	}
}

// TestKeeperNoAnswer: renewals that get no answer at all (a member cut
// off) are reported as such, with the time since the last success, not as
// no error; the loss at the deadline says so too. 3 rounds.
func TestKeeperNoAnswer(t *testing.T) {
	for round := range 3 {
		var hang atomic.Bool
		renew := func(ctx context.Context, until time.Duration) (Renewal, error) {
			if hang.Load() {
				<-ctx.Done()
				return Renewal{}, ctx.Err()
			}
			return Renewal{Sent: Now(), TTL: 2 * time.Second}, nil
		}
		k := Keep(renew, Renewal{Sent: Now(), TTL: 2 * time.Second}, 200*time.Millisecond, nil)
		time.Sleep(300 * time.Millisecond)
		if err := k.LastError(); err != nil {
			t.Fatalf("round %d: renewals answered, LastError %v", round, err)
		}
		hang.Store(true)
		time.Sleep(time.Second)
		if err := k.LastError(); err == nil || !strings.HasPrefix(err.Error(), "no answer in ") {
			t.Fatalf("round %d: renewals unanswered for 1s: LastError %v, want \"no answer in D\"", round, err)
		}
		for {
			_, err := k.Deadline()
			if err != nil {
				if !strings.Contains(err.Error(), "no answer in ") {
					t.Fatalf("round %d: lost with %q, want it to say no answer came", round, err)
				}
				break
			}
			select {
			case <-k.Changed():
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: not lost 5s after renewals hung", round)
			}
		}
		k.Stop()
	}
}

// TestReleaseBudget: a release takes until the lease's deadline, at least a
// renewal interval (a lost lease), at most the dial timeout.
func TestReleaseBudget(t *testing.T) {
	for _, c := range []struct{ left, every, dial, want time.Duration }{
		{2 * time.Second, time.Second, 5 * time.Second, 2 * time.Second},
		{-9 * time.Second, time.Second, 5 * time.Second, time.Second},
		{20 * time.Second, 3 * time.Second, 5 * time.Second, 5 * time.Second},
		{20 * time.Second, 3 * time.Second, 0, 5 * time.Second},
	} {
		if got := releaseBudget(c.left, c.every, c.dial); got != c.want {
			t.Errorf("releaseBudget(%v, %v, %v) = %v, want %v", c.left, c.every, c.dial, got, c.want)
		}
	}
}
