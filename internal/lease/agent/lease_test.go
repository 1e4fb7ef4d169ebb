package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/lease/agent"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// dial connects an agent for key to endpoints: Serve in process, over
// pipes, with agent's own client at the other end, as dirlockd talks to
// dirlockd-etcd. It is closed when the test ends.
func dial(t *testing.T, endpoints, key string, ttl time.Duration, tweak ...func(*agent.Config)) *lease.Agent {
	a, _ := dialCounting(t, endpoints, key, ttl, tweak...)
	return a
}

// dialCounting is dial that also counts the renewals asked of the agent.
func dialCounting(t *testing.T, endpoints, key string, ttl time.Duration, tweak ...func(*agent.Config)) (*lease.Agent, *renewals) {
	t.Helper()
	cfg := agent.Config{Endpoints: strings.Split(endpoints, ","), Key: key, TTL: ttl, DialTimeout: 5 * time.Second}
	for _, f := range tweak {
		f(&cfg)
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := agent.Serve(inR, outW); err != nil {
			t.Errorf("serve: %v", err)
		}
		outW.Close()
	}()
	n := &renewals{w: inW}
	a, err := lease.Connect(outR, n, cfg)
	if err != nil {
		inW.Close()
		<-served
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); <-served })
	return a, n
}

// renewals counts the renewal requests written to an agent (a request a
// line, each in one write).
type renewals struct {
	w io.WriteCloser
	n atomic.Int64
}

func (r *renewals) Write(p []byte) (int, error) {
	r.n.Add(int64(bytes.Count(p, []byte(`"op":"`+lease.OpRenew+`"`))))
	return r.w.Write(p)
}

func (r *renewals) Close() error { return r.w.Close() }

// Sent returns how many renewals were asked so far.
func (r *renewals) Sent() int { return int(r.n.Load()) }

func identity(t *testing.T, pid int) agent.Identity {
	t.Helper()
	id, err := agent.Self("/srv/data")
	if err != nil {
		t.Fatal(err)
	}
	id.PID = pid
	return id
}

func acquire(t *testing.T, c *lease.Agent, id agent.Identity) *lease.Lease {
	t.Helper()
	l, err := c.Acquire(context.Background(), id, false)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	return l
}

// raw is a plain etcd client, for what the test does behind dirlockd's back.
func raw(t *testing.T, endpoints string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(endpoints, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// waitLost waits until l says it is lost and returns when it saw that, on
// lease.Now's clock.
func waitLost(t *testing.T, l *lease.Lease, timeout time.Duration) (time.Duration, error) {
	t.Helper()
	end := time.After(timeout)
	for {
		if _, err := l.Deadline(); err != nil {
			return lease.Now(), err
		}
		select {
		case <-l.Changed():
		case <-end:
			t.Fatalf("lease not lost within %v", timeout)
		}
	}
}

// TestAcquireConflictRelease: a second holder is refused with the first's
// identity; after a release the key is free at once and the next token is
// higher. 5 rounds.
func TestAcquireConflictRelease(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	a := dial(t, e.Endpoints(), "/dirlockd/test", 5*time.Second)
	b := dial(t, e.Endpoints(), "/dirlockd/test", 5*time.Second)
	var last int64
	for round := range 5 {
		la := acquire(t, a, identity(t, 1000+round))
		if la.Token() <= last {
			t.Fatalf("round %d: token %d not above %d", round, la.Token(), last)
		}
		last = la.Token()
		_, err := b.Acquire(context.Background(), identity(t, 2000+round), false)
		var he *agent.HeldError
		if !errors.As(err, &he) {
			t.Fatalf("round %d: second acquire: %v, want a HeldError", round, err)
		}
		if h, _ := os.Hostname(); he.Holder.PID != 1000+round || he.Holder.Host != h || he.Holder.Token != la.Token() || he.Holder.Started.IsZero() {
			t.Fatalf("round %d: HeldError names %+v, want PID %d on %s token %d", round, he.Holder, 1000+round, h, la.Token())
		}
		if h, err := b.Holder(context.Background()); err != nil || h == nil || h.PID != 1000+round {
			t.Fatalf("round %d: Holder = %+v, %v", round, h, err)
		}
		if err := la.Release(); err != nil {
			t.Fatal(err)
		}
		if _, err := la.Deadline(); !errors.Is(err, agent.ErrLost) {
			t.Fatalf("released lease: Deadline err %v, want ErrLost", err)
		}
		if h, err := b.Holder(context.Background()); err != nil || h != nil {
			t.Fatalf("round %d: after release Holder = %+v, %v; want free", round, h, err)
		}
		lb := acquire(t, b, identity(t, 2000+round))
		if lb.Token() <= last {
			t.Fatalf("round %d: token %d not above %d", round, lb.Token(), last)
		}
		last = lb.Token()
		if err := lb.Release(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWaitHandOff: a waiter blocks on a watch while the key is held and
// takes it as soon as the holder releases it. 3 rounds.
func TestWaitHandOff(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	a := dial(t, e.Endpoints(), "/dirlockd/wait", 5*time.Second)
	b := dial(t, e.Endpoints(), "/dirlockd/wait", 5*time.Second)
	for round := range 3 {
		la := acquire(t, a, identity(t, 1))
		got := make(chan *lease.Lease, 1)
		go func() {
			l, err := b.Acquire(context.Background(), identity(t, 2), true)
			if err != nil {
				t.Errorf("waiting acquire: %v", err)
			}
			got <- l
		}()
		// The waiter must still be waiting after several renewals.
		select {
		case <-got:
			t.Fatalf("round %d: waiter acquired a held key", round)
		case <-time.After(2 * time.Second):
		}
		released := time.Now()
		if err := la.Release(); err != nil {
			t.Fatal(err)
		}
		select {
		case lb := <-got:
			if lb == nil {
				t.FailNow()
			}
			t.Logf("round %d: hand-off in %v", round, time.Since(released).Round(time.Millisecond))
			if lb.Token() <= la.Token() {
				t.Fatalf("token %d after %d", lb.Token(), la.Token())
			}
			lb.Release()
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: waiter did not acquire after the release", round)
		}
	}
	// A wait that ends reports the holder.
	la := acquire(t, a, identity(t, 7))
	defer la.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := b.Acquire(ctx, identity(t, 8), true)
	var he *agent.HeldError
	if !errors.As(err, &he) || he.Holder.PID != 7 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timed-out wait: %v", err)
	}
}

// TestDeadlineFromSendTime: with every answer delayed by 700 ms, the
// deadline is the send time + TTL, not the receipt time, and a delay below
// the TTL is no loss. 6 renewals.
func TestDeadlineFromSendTime(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	p := testutil.StartProxy(t, strings.TrimPrefix(e.Members[0].ClientURL, "http://"))
	type renewal struct{ sent, received time.Duration }
	renewals := make(chan renewal, 16)
	c := dial(t, p.Addr, "/dirlockd/delay", 4*time.Second, func(cfg *agent.Config) { cfg.Renew = time.Second })
	c.OnRenew = func(s, r time.Duration) { renewals <- renewal{s, r} }
	l := acquire(t, c, identity(t, 1))
	defer l.Release()
	const delay = 700 * time.Millisecond
	p.SetDelay(delay)
	for i := 0; i < 6; {
		select {
		case r := <-renewals:
			dl, err := l.Deadline()
			if err != nil {
				t.Fatalf("lost under a delay below the TTL: %v", err)
			}
			lag := r.received - r.sent
			if lag < delay {
				continue // sent before the delay was set
			}
			i++
			if dl != r.sent+l.TTL() {
				t.Fatalf("deadline %v after the renewal sent at %v (answered %v later), want sent + TTL %v", dl, r.sent, lag, l.TTL())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no renewal within 30s")
		}
	}
}

// TestStoppedEtcdLosesLease: with etcd SIGSTOPped the lease is seen lost at
// its deadline (the last successful send + TTL), which is before etcd can
// expire it; after SIGCONT the lost lease stays lost and a waiter gets a
// higher token once etcd has expired it. 2 rounds.
func TestStoppedEtcdLosesLease(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	for round := range 2 {
		var lastSent time.Duration
		sent := make(chan time.Duration, 16)
		c := dial(t, e.Endpoints(), "/dirlockd/stop", 3*time.Second)
		c.OnRenew = func(s, _ time.Duration) { sent <- s }
		l := acquire(t, c, identity(t, 1))
		select {
		case lastSent = <-sent:
		case <-time.After(20 * time.Second):
			t.Fatal("no renewal")
		}
		e.Members[0].Stop()
		stopped := lease.Now()
		lostAt, err := waitLost(t, l, 30*time.Second)
	drain:
		for {
			select {
			case lastSent = <-sent:
			default:
				break drain
			}
		}
		e.Members[0].Cont()
		if !errors.Is(err, agent.ErrLost) {
			t.Fatalf("lost with %v", err)
		}
		deadline := lastSent + l.TTL()
		t.Logf("round %d: stopped %v after the last renewal; lost %v after it (deadline at +%v)", round,
			(stopped - lastSent).Round(time.Millisecond), (lostAt - lastSent).Round(time.Millisecond), l.TTL())
		if lostAt < deadline || lostAt > deadline+time.Second {
			t.Fatalf("lost %v after the last renewal, want at its deadline %v", lostAt-lastSent, l.TTL())
		}
		w := dial(t, e.Endpoints(), "/dirlockd/stop", 3*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		lw, err := w.Acquire(ctx, identity(t, 2), true)
		cancel()
		if err != nil {
			t.Fatalf("waiter after expiry: %v", err)
		}
		if lw.Token() <= l.Token() {
			t.Fatalf("token %d after %d", lw.Token(), l.Token())
		}
		if _, err := l.Deadline(); err == nil {
			t.Fatal("the lost lease came back")
		}
		l.Release()
		if h, err := w.Holder(context.Background()); err != nil || h == nil || h.PID != 2 {
			t.Fatalf("releasing a lost lease touched the new holder: %+v %v", h, err)
		}
		lw.Release()
	}
}

// TestUnavailable: nothing listening is an UnavailableError within the
// dial timeout.
func TestUnavailable(t *testing.T) {
	port := testutil.FreePort(t)
	c := dial(t, "127.0.0.1:"+strconv.Itoa(port), "/dirlockd/none", 3*time.Second, func(cfg *agent.Config) { cfg.DialTimeout = time.Second })
	start := time.Now()
	_, err := c.Acquire(context.Background(), identity(t, 1), false)
	var ue *agent.UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("acquire against nothing: %v, want UnavailableError", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v with a 1s dial timeout", d)
	}
	t.Log(err)
}

// TestForeignKey: a key that is not a dirlockd holder is refused, not
// waited for.
func TestForeignKey(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	if _, err := raw(t, e.Endpoints()).Put(context.Background(), "/dirlockd/foreign", "some other tool"); err != nil {
		t.Fatal(err)
	}
	c := dial(t, e.Endpoints(), "/dirlockd/foreign", 3*time.Second)
	_, err := c.Acquire(context.Background(), identity(t, 1), true)
	var re *agent.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("acquire of a foreign key: %v, want RefusedError", err)
	}
	t.Log(err)
}

// TestPermissionDenied: a user without permission on the key gets a
// RefusedError that says what to grant.
func TestPermissionDenied(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	e.EnableAuth(t, "rootpw", testutil.EtcdGrant{User: "app", Password: "apppw", Key: "/elsewhere/", RangeEnd: "/elsewhere0"})
	ctx := context.Background()
	c := dial(t, e.Endpoints(), "/dirlockd/perm", 3*time.Second, func(cfg *agent.Config) { cfg.Username, cfg.Password = "app", "apppw" })
	_, err := c.Acquire(ctx, identity(t, 1), false)
	var re *agent.RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "grant-permission") {
		t.Fatalf("acquire without permission: %v, want RefusedError naming the fix", err)
	}
	t.Log(err)
	_, err = agent.Dial(agent.Config{Endpoints: []string{e.Endpoints()}, Key: "/k", TTL: 3 * time.Second, Username: "app", Password: "wrong"})
	if !errors.As(err, &re) {
		t.Fatalf("wrong password: %v, want RefusedError", err)
	}
	t.Log(err)
}
