package supervise

import (
	"errors"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/guard"
	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	armed   int // After calls so far
}

type fakeWaiter struct {
	at time.Time
	c  chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1e9, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	c.armed++
	return ch
}

// Advance moves the clock and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.c <- c.now
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

func (c *fakeClock) Armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.armed
}

// fakeRecord is the record, in memory.
type fakeRecord struct {
	mu     sync.Mutex
	status []pidfile.Status
	extra  map[string]string
}

func (r *fakeRecord) SetStatus(s pidfile.Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = append(r.status, s)
}

func (r *fakeRecord) SetExtra(k, v string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.extra == nil {
		r.extra = map[string]string{}
	}
	r.extra[k] = v
}

func (r *fakeRecord) Extra(k string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.extra[k]
}

func (r *fakeRecord) Statuses() []pidfile.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.status)
}

// events is what the fake guards saw, in order.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, s)
}

func (e *events) List() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

// fakeGuard is a guard the test drives: it posts events, and it may own a
// helper process.
type fakeGuard struct {
	name    string
	ev      *events
	changed chan struct{}

	mu      sync.Mutex
	next    []guard.Event
	helper  int // a helper process's PID; 0 for none
	onFree  func()
	overdue []string
}

func newFakeGuard(name string, ev *events) *fakeGuard {
	return &fakeGuard{name: name, ev: ev, changed: make(chan struct{}, 1)}
}

func (g *fakeGuard) post(e guard.Event) {
	g.mu.Lock()
	g.next = append(g.next, e)
	g.mu.Unlock()
	g.changed <- struct{}{}
}

func (g *fakeGuard) Fields() map[string]string { return map[string]string{g.name + "_field": "1"} }
func (g *fakeGuard) Env() []string             { return []string{"FAKE_" + strings.ToUpper(g.name) + "=1"} }
func (g *fakeGuard) Changed() <-chan struct{}  { return g.changed }
func (g *fakeGuard) Tree(proc.Tree)            {}

func (g *fakeGuard) Check() guard.Event {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.next) == 0 {
		return guard.Event{}
	}
	e := g.next[0]
	g.next = g.next[1:]
	return e
}

func (g *fakeGuard) Helpers() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.helper == 0 {
		return nil
	}
	return []int{g.helper}
}

func (g *fakeGuard) HelperExited(pid int, ws unix.WaitStatus) (bool, guard.Event) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if pid == 0 || pid != g.helper {
		return false, guard.Event{}
	}
	g.helper = 0
	g.ev.add(g.name + " helper exited")
	return true, guard.Event{}
}

func (g *fakeGuard) Overdue(kill bool, pids []int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.overdue = append(g.overdue, map[bool]string{false: "stop", true: "kill"}[kill])
}

func (g *fakeGuard) Release() error {
	g.ev.add(g.name + " released")
	if g.onFree != nil {
		g.onFree()
	}
	return nil
}

// plainFake is a guard with none of guard.DeadlineGuard's methods, as the local
// interlock is.
type plainFake struct{ g *fakeGuard }

func newPlainFake(name string, ev *events) plainFake { return plainFake{newFakeGuard(name, ev)} }

func (p plainFake) post(e guard.Event)        { p.g.post(e) }
func (p plainFake) Fields() map[string]string { return p.g.Fields() }
func (p plainFake) Env() []string             { return p.g.Env() }
func (p plainFake) Changed() <-chan struct{}  { return p.g.Changed() }
func (p plainFake) Check() guard.Event        { return p.g.Check() }
func (p plainFake) Release() error            { return p.g.Release() }

// harness runs one supervisor in the background.
type harness struct {
	s     *Supervisor
	sigs  chan os.Signal
	clock *fakeClock
	rec   *fakeRecord
	log   *testutil.Buffer
	code  chan int
}

func newHarness(t *testing.T, argv []string, guards ...guard.Guard) *harness {
	t.Helper()
	path, err := lookPath(argv[0])
	if err != nil {
		t.Fatal(err)
	}
	nl, err := notify.Listen(NotifyAddress())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nl.Close()
		// A test that failed leaves its tree: kill and reap it.
		tr := proc.PinBelow(proc.Self())
		tr.Signal(unix.SIGKILL)
		tr.Close()
		for {
			var ws unix.WaitStatus
			if _, err := unix.Wait4(-1, &ws, 0, nil); err != nil && err != unix.EINTR {
				break
			}
		}
	})
	h := &harness{sigs: make(chan os.Signal, 4), clock: newFakeClock(), rec: &fakeRecord{}, log: &testutil.Buffer{}, code: make(chan int, 1)}
	h.s = &Supervisor{
		Path: path, Args: argv, Env: os.Environ(),
		Log:    slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Record: h.rec, Guards: guards, Signals: h.sigs, Notify: nl,
		StopSignal: syscall.SIGTERM, ReloadSignal: syscall.SIGHUP, StopTimeout: time.Hour, KillMode: ControlGroup, OnLost: "shutdown",
		Clock: h.clock,
	}
	return h
}

func (h *harness) start() { go func() { h.code <- h.s.Run() }() }

// wait returns Run's status, failing after 20 s.
func (h *harness) wait(t *testing.T) int {
	t.Helper()
	select {
	case c := <-h.code:
		return c
	case <-time.After(20 * time.Second):
		t.Fatalf("Run did not return in 20 s; log:\n%s", h.log.String())
		return 0
	}
}

// until polls cond for up to 10 s.
func until(t *testing.T, what string, cond func() bool, log *testutil.Buffer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in 10 s; log:\n%s", what, log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// treeSize is how many processes of the supervisor's tree there are.
func (h *harness) treeSize() int {
	var helpers []int
	for _, g := range h.s.Guards { // not h.s.helpers: Run's state is its own
		if dg, ok := g.(guard.DeadlineGuard); ok {
			helpers = append(helpers, dg.Helpers()...)
		}
	}
	t := proc.PinBelow(proc.Self(), helpers...)
	defer t.Close()
	return len(t)
}

const ignoreTerm = `trap "" TERM; sleep 30 & wait`

func TestStopMainProcess(t *testing.T) {
	ev := &events{}
	h := newHarness(t, []string{"sleep", "30"}, newPlainFake("local", ev))
	h.start()
	until(t, "server", func() bool { return h.treeSize() == 1 }, h.log)
	h.sigs <- syscall.SIGTERM
	if c := h.wait(t); c != 128+int(syscall.SIGTERM) {
		t.Fatalf("status %d, want 143; log:\n%s", c, h.log.String())
	}
	if st := h.rec.Statuses(); !slices.Contains(st, pidfile.Stopping) {
		t.Errorf("the record never said stopping: %v", st)
	}
	if got := ev.List(); !slices.Equal(got, []string{"local released"}) {
		t.Errorf("guard events %v", got)
	}
	if h.rec.Extra("local_field") != "1" || h.rec.Extra(ChildPIDKey) == "" {
		t.Errorf("record fields %v", h.rec.extra)
	}
}

func TestStopWithoutMainProcess(t *testing.T) {
	ev := &events{}
	// The command exits at once and leaves two processes: no main one.
	h := newHarness(t, []string{"sh", "-c", "sleep 30 & sleep 30 & exit 0"}, newPlainFake("local", ev))
	h.start()
	until(t, "two orphans", func() bool {
		return h.treeSize() == 2 && strings.Contains(h.log.String(), "holding the data directory until the last process")
	}, h.log)
	h.sigs <- syscall.SIGTERM
	if c := h.wait(t); c != 0 {
		t.Fatalf("status %d, want the command's 0; log:\n%s", c, h.log.String())
	}
	if !strings.Contains(h.log.String(), `reason="signal SIGTERM"`) {
		t.Errorf("no stop logged:\n%s", h.log.String())
	}
}

func TestKillAtStopTimeout(t *testing.T) {
	h := newHarness(t, []string{"sh", "-c", ignoreTerm}, newPlainFake("local", &events{}))
	h.s.StopTimeout = 90 * time.Second
	h.start()
	until(t, "server", func() bool { return h.treeSize() == 2 }, h.log)
	armed := h.clock.Armed()
	h.sigs <- syscall.SIGTERM
	until(t, "stop timer", func() bool { return h.clock.Armed() > armed }, h.log)
	h.clock.Advance(89 * time.Second)
	if h.treeSize() != 2 {
		t.Fatal("the tree died before the stop timeout")
	}
	h.clock.Advance(time.Second)
	if c := h.wait(t); c != 128+int(syscall.SIGKILL) {
		t.Fatalf("status %d, want 137; log:\n%s", c, h.log.String())
	}
	if !strings.Contains(h.log.String(), "sending SIGKILL to its tree") {
		t.Errorf("no SIGKILL logged:\n%s", h.log.String())
	}
}

func TestLocalLossShutdown(t *testing.T) {
	g := newPlainFake("local", &events{})
	h := newHarness(t, []string{"sleep", "30"}, g)
	h.start()
	until(t, "server", func() bool { return h.treeSize() == 1 }, h.log)
	g.post(guard.Event{Lost: errors.New("the pidfile was deleted")})
	if c := h.wait(t); c != 128+int(syscall.SIGTERM) {
		t.Fatalf("status %d, want 143; log:\n%s", c, h.log.String())
	}
	l := h.log.String()
	if !strings.Contains(l, "interlock is lost: the pidfile was deleted") || !strings.Contains(l, `reason="interlock lost"`) {
		t.Errorf("want the loss and the stop for it logged:\n%s", l)
	}
}

func TestLocalLossLog(t *testing.T) {
	g := newPlainFake("local", &events{})
	h := newHarness(t, []string{"sleep", "30"}, g)
	h.s.OnLost = "log"
	h.start()
	until(t, "server", func() bool { return h.treeSize() == 1 }, h.log)
	g.post(guard.Event{Lost: errors.New("the pidfile was deleted")})
	until(t, "loss logged", func() bool { return strings.Contains(h.log.String(), "interlock is lost") }, h.log)
	if st := h.rec.Statuses(); slices.Contains(st, pidfile.Stopping) || h.treeSize() != 1 {
		t.Fatalf("--on-lost log stopped the server: %v; log:\n%s", st, h.log.String())
	}
	h.sigs <- syscall.SIGTERM
	if c := h.wait(t); c != 128+int(syscall.SIGTERM) {
		t.Fatalf("status %d, want 143", c)
	}
	if strings.Contains(h.log.String(), `reason="interlock lost"`) {
		t.Errorf("stopped for the loss under --on-lost log:\n%s", h.log.String())
	}
}

func TestLeaseDeadline(t *testing.T) {
	local, ls := newPlainFake("local", &events{}), newFakeGuard("lease", &events{})
	h := newHarness(t, []string{"sh", "-c", ignoreTerm}, local, ls)
	h.s.StopTimeout = time.Hour
	// The lease ends in 10 s: stopped by 6 s, dead by 9 s.
	ls.next = []guard.Event{{Deadlines: true, StopIn: 6 * time.Second, KillIn: 9 * time.Second, Why: "lease deadline"}}
	start := h.clock.Now()
	h.start()
	until(t, "server", func() bool { return h.treeSize() == 2 }, h.log)
	h.clock.Advance(5 * time.Second)
	if st := h.rec.Statuses(); slices.Contains(st, pidfile.Stopping) {
		t.Fatal("stopped before the stop deadline")
	}
	h.clock.Advance(time.Second)
	until(t, "stop at the deadline", func() bool { return slices.Contains(h.rec.Statuses(), pidfile.Stopping) }, h.log)
	if h.treeSize() != 2 {
		t.Fatal("the tree died at the stop signal (it ignores SIGTERM)")
	}
	h.clock.Advance(3 * time.Second)
	if c := h.wait(t); c != 128+int(syscall.SIGKILL) {
		t.Fatalf("status %d, want 137; log:\n%s", c, h.log.String())
	}
	if killed := h.clock.Now().Sub(start); killed >= 10*time.Second {
		t.Errorf("SIGKILL at %v, not before the lease's end at 10 s", killed)
	}
	if !slices.Equal(ls.overdue, []string{"stop", "kill"}) {
		t.Errorf("Overdue calls %v, want stop then kill", ls.overdue)
	}
	if !strings.Contains(h.log.String(), `reason="lease deadline"`) {
		t.Errorf("the stop does not give the guard's reason:\n%s", h.log.String())
	}
}

func TestLeaseLost(t *testing.T) {
	local, ls := newPlainFake("local", &events{}), newFakeGuard("lease", &events{})
	h := newHarness(t, []string{"sh", "-c", ignoreTerm}, local, ls)
	h.start()
	until(t, "server", func() bool { return h.treeSize() == 2 }, h.log)
	ls.post(guard.Event{Lost: errors.New("lease gone"), Kill: true})
	// No clock move: the SIGKILL comes at once, not at a timeout.
	if c := h.wait(t); c != 128+int(syscall.SIGKILL) {
		t.Fatalf("status %d, want 137; log:\n%s", c, h.log.String())
	}
	if !slices.Equal(ls.overdue, []string{"kill"}) {
		t.Errorf("Overdue calls %v, want kill", ls.overdue)
	}
}

// TestReleaseOrder: the tree gone, then the lease's helper told (its exit
// reaped), the lease released, and the other guards after, in the reverse
// of their order, the local guard last.
func TestReleaseOrder(t *testing.T) {
	ev := &events{}
	local, mid, ls := newPlainFake("local", ev), newFakeGuard("mid", ev), newFakeGuard("lease", ev)
	pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "60"}, &syscall.ProcAttr{Files: []uintptr{0, 1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	helper, ok := proc.PinChild(pid, 0)
	if !ok {
		t.Fatal("cannot pin the helper")
	}
	defer helper.Close()
	ls.helper = pid
	var server *proc.Pinned
	ls.onFree = func() {
		if server == nil || !server.WaitExit(0) {
			ev.add("lease released before the server exited")
		}
		helper.Signal(unix.SIGTERM)
	}
	h := newHarness(t, []string{"sleep", "30"}, local, mid, ls)
	h.start()
	// The helper alone is a tree of one before Run knows it: wait for
	// the server itself.
	until(t, "server", func() bool { return h.rec.Extra(ChildPIDKey) != "" }, h.log)
	spid, _ := strconv.Atoi(h.rec.Extra(ChildPIDKey))
	sp, err := proc.Open(spid)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	server = &sp
	h.sigs <- syscall.SIGTERM
	if c := h.wait(t); c != 128+int(syscall.SIGTERM) {
		t.Fatalf("status %d, want 143; log:\n%s", c, h.log.String())
	}
	want := []string{"lease released", "lease helper exited", "mid released", "local released"}
	if got := ev.List(); !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func lookPath(name string) (string, error) {
	for _, d := range []string{"/usr/bin", "/bin"} {
		if _, err := os.Stat(d + "/" + name); err == nil {
			return d + "/" + name, nil
		}
	}
	return "", os.ErrNotExist
}
