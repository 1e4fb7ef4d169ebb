package lease

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestNewTiming: the defaults scale with the TTL and fit in it; a stop
// timeout that leaves no room is refused.
func TestNewTiming(t *testing.T) {
	for _, c := range []struct {
		ttl, stop             time.Duration
		renew, term, kill, ok time.Duration // term and kill: before the deadline
	}{
		{ttl: 3 * time.Second, renew: time.Second, term: 900 * time.Millisecond, kill: 300 * time.Millisecond, ok: 1},
		{ttl: 10 * time.Second, renew: 10 * time.Second / 3, term: 3 * time.Second, kill: time.Second, ok: 1},
		{ttl: 10 * time.Second, stop: 5 * time.Second, renew: 10 * time.Second / 3, term: 6 * time.Second, kill: time.Second, ok: 1},
		{ttl: 3 * time.Second, stop: 2 * time.Second},
		{ttl: 10 * time.Second, stop: 6 * time.Second},
	} {
		tm, err := NewTiming(c.ttl, c.stop)
		if (err == nil) != (c.ok != 0) {
			t.Errorf("ttl %v stop %v: err %v", c.ttl, c.stop, err)
			continue
		}
		if err == nil && (tm.Renew != c.renew || tm.Stop+tm.Margin != c.term || tm.Margin != c.kill) {
			t.Errorf("ttl %v stop %v: %+v", c.ttl, c.stop, tm)
		}
	}
}

// fakeAgent serves the agent's protocol in process, as an etcd that grants
// every acquire a new token (or, while silent is set, never answers one),
// renews while renew is set, and counts revokes.
type fakeAgent struct {
	ttl     time.Duration
	renew   atomic.Bool
	silent  atomic.Bool
	revokes atomic.Int32

	w     io.Writer
	mu    sync.Mutex
	token int64
	gone  map[int64]bool // gone requests under way
}

func startFakeAgent(t *testing.T, cfg Config) (*fakeAgent, *Agent) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	f := &fakeAgent{ttl: cfg.TTL, w: outW, gone: map[int64]bool{}}
	f.renew.Store(true)
	go f.serve(inR)
	a, err := Connect(outR, inW, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); outW.Close() })
	return f, a
}

func (f *fakeAgent) reply(rep Reply) {
	b, _ := json.Marshal(rep)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.w.Write(append(b, '\n'))
}

func (f *fakeAgent) serve(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var req Request
		if json.Unmarshal(sc.Bytes(), &req) != nil {
			continue
		}
		switch req.Op {
		case OpAcquire:
			if f.silent.Load() {
				continue // answered only by a cancel, as an agent whose etcd is silent
			}
			f.mu.Lock()
			f.token += 3
			tok := f.token
			f.mu.Unlock()
			f.reply(Reply{ID: req.ID, Lease: &Granted{ID: tok, Token: tok, TTL: f.ttl, Sent: Now()}})
		case OpRenew:
			if f.renew.Load() {
				f.reply(Reply{ID: req.ID, Renewal: &Renewal{Sent: Now(), TTL: f.ttl}})
			} else {
				f.reply(Reply{ID: req.ID, Err: EncodeError(errors.New("etcd does not answer"))})
			}
		case OpRevoke:
			f.revokes.Add(1)
			f.reply(Reply{ID: req.ID})
		case OpGone:
			f.mu.Lock()
			f.gone[req.ID] = true
			f.mu.Unlock()
		case OpCancel:
			f.reply(Reply{ID: req.Ref, Err: EncodeError(context.Canceled)})
		default: // dial, holder: done, free
			f.reply(Reply{ID: req.ID})
		}
	}
}

// TestGuard: the lease as run's and stress's guard, over the agent's
// protocol. Each of 3 rounds acquires a new lease under a higher token,
// whose deadlines Check reports, and revokes it; in round 1 renewals fail,
// and the loss is reported once, with SIGKILL; the guard takes the lease
// again after it, as stress does for each hold. Once released, the agent's
// exit is expected, before it the exit stops the server.
func TestGuard(t *testing.T) {
	tm := Timing{Renew: 100 * time.Millisecond, Stop: 300 * time.Millisecond, Margin: 100 * time.Millisecond}
	f, a := startFakeAgent(t, Config{Key: "/k", TTL: time.Second, DialTimeout: time.Second, Timing: tm})
	g := &Guard{agent: a, timing: tm, log: slog.New(slog.DiscardHandler), agentPID: 1 << 30}
	var last int64
	for round := range 3 {
		if err := g.Acquire(context.Background(), t.TempDir(), 0); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		tok := g.Lease().Token()
		if tok <= last || !slices.Contains(g.Env(), TokenEnv+"="+strconv.FormatInt(tok, 10)) || g.Fields()[TokenField] != strconv.FormatInt(tok, 10) {
			t.Fatalf("round %d: token %d after %d; env %v, fields %v", round, tok, last, g.Env(), g.Fields())
		}
		last = tok
		ev := g.Check()
		if !ev.Deadlines || ev.Lost != nil || ev.KillIn-ev.StopIn != tm.Stop || ev.KillIn > time.Second-tm.Margin || ev.KillIn < time.Second-tm.Margin-500*time.Millisecond {
			t.Fatalf("round %d: %+v, want the kill deadline %v before the lease's end, the stop %v before it", round, ev, tm.Margin, tm.Stop)
		}
		if round == 1 {
			f.renew.Store(false)
			deadline := time.After(10 * time.Second)
			for ev.Lost == nil {
				select {
				case <-g.Changed():
				case <-deadline:
					t.Fatal("no loss in 10 s with every renewal failing (TTL 1s)")
				}
				ev = g.Check()
			}
			if !ev.Kill || !errors.Is(ev.Lost, ErrLost) {
				t.Errorf("loss %+v, want ErrLost with SIGKILL at once", ev)
			}
			if ev := g.Check(); ev.Lost != nil {
				t.Errorf("the loss reported twice: %v", ev.Lost)
			}
			f.renew.Store(true)
		}
		if err := g.Revoke(); err != nil || f.revokes.Load() != int32(round+1) {
			t.Fatalf("round %d: revoke %v, %d revokes", round, err, f.revokes.Load())
		}
	}
	var exited unix.WaitStatus // exit status 0
	if mine, ev := g.HelperExited(g.agentPID, exited); !mine || ev.Stop == "" {
		t.Errorf("the agent's exit while held: mine %v, %+v, want a stop", mine, ev)
	}
	g.agentPID = 1 << 30
	g.Release()
	if mine, ev := g.HelperExited(g.agentPID, exited); !mine || ev.Stop != "" {
		t.Errorf("the agent's exit after the release: mine %v, %+v, want nothing to do", mine, ev)
	}
	if f.revokes.Load() != 3 {
		t.Errorf("%d revokes, want 3: Release revoked a lease revoked already", f.revokes.Load())
	}
}

// TestWaitEndsWhileEtcdSilent: a wait that ends while the agent is still
// waiting for etcd to answer an attempt is etcd unavailable (run's 69),
// not a bare "context deadline exceeded" (70): the agent answers the
// cancel of the acquire with "canceled". CI met this once in
// TestLeaseWaitUnavailable, when the wait ended inside an attempt rather
// than between two. 3 rounds.
func TestWaitEndsWhileEtcdSilent(t *testing.T) {
	f, a := startFakeAgent(t, Config{Endpoints: []string{"http://127.0.0.1:1"}, Key: "/k", TTL: time.Second, DialTimeout: time.Second})
	f.silent.Store(true)
	for round := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := a.Acquire(ctx, Identity{PID: 1, Host: "h"}, true)
		cancel()
		var ue *UnavailableError
		if !errors.As(err, &ue) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "http://127.0.0.1:1") {
			t.Fatalf("round %d: %v (%T), want an UnavailableError naming the endpoint and the wait's end", round, err, err)
		}
		if round == 0 {
			t.Logf("%v", err)
		}
	}
}
