package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

func TestMain(m *testing.M) {
	testutil.Main(m, map[string]testutil.Helper{"hold": helperHold, "act": helperAct})
}

// helperHold holds the data directory args[0] as a holder would, and says
// "held PID". On SIGHUP it marks its record ready and says "hup"; on SIGTERM it releases and exits 0,
// unless args[1] is "ignore": then SIGTERM is ignored, and only SIGKILL
// ends it.
func helperHold(args []string) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP)
	if len(args) > 1 && args[1] == "ignore" {
		signal.Reset(syscall.SIGTERM)
		signal.Ignore(syscall.SIGTERM)
	}
	l, err := interlock.Acquire(context.Background(), args[0], interlock.Options{})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("held", l.Record().PID)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			// Marks the record ready, as a server's READY=1 does.
			if err := l.Update(func(r *pidfile.Record) { r.Status = pidfile.Ready }); err != nil {
				fmt.Println("error", err)
				return 1
			}
			fmt.Println("hup")
			continue
		}
		if err := l.Release(); err != nil {
			fmt.Println("error", err)
			return 1
		}
		return 0
	}
	return 0
}

// helperAct stops (args[1] "stop") or reloads the server of args[0], and
// prints the Outcome's number, then the log.
func helperAct(args []string) int {
	log, out := testLog()
	var got Outcome
	if args[1] == "stop" {
		got = (&Stop{Log: log, Timeout: 2 * time.Second, KillAfter: time.Second}).Run(args[0])
	} else {
		got = Reload(log, args[0], interlock.Options{})
	}
	fmt.Println(int(got))
	fmt.Print(out)
	return 0
}

// hold starts a holder of dir and waits until it holds it. When the test
// ends, the holder is killed (if it still runs) and the directory taken
// and released once, which removes the segment a killed holder leaves.
func hold(t *testing.T, dir string, args ...string) *testutil.Proc {
	t.Helper()
	p := testutil.StartHelper(t, "hold", append([]string{dir}, args...)...)
	t.Cleanup(func() {
		p.Kill()
		l, err := interlock.Acquire(context.Background(), dir, interlock.Options{})
		if err != nil {
			t.Errorf("clean-up: %v", err)
			return
		}
		if err := l.Release(); err != nil {
			t.Errorf("clean-up: %v", err)
		}
	})
	if line := p.Expect(t, "held "); line == "" {
		t.Fatal("the holder did not say it holds the directory")
	}
	return p
}

func testLog() (*slog.Logger, *bytes.Buffer) {
	var b bytes.Buffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

// TestStopNobody: a directory nobody holds is stopped already; one that
// cannot be inspected is Unreadable.
func TestStopNobody(t *testing.T) {
	dir := testutil.DataDir(t)
	log, out := testLog()
	s := Stop{Log: log, Timeout: time.Second}
	if got := s.Run(dir); got != Done || !strings.Contains(out.String(), "not running: nothing to stop") {
		t.Errorf("free: %v; log:\n%s", got, out)
	}
	if got := s.Run(filepath.Join(dir, "nosuch")); got != Unreadable {
		t.Errorf("a missing directory: %v, want Unreadable", got)
	}
	if got := Reload(log, dir, interlock.Options{}); got != NotRunning {
		t.Errorf("reload of a free directory: %v, want NotRunning", got)
	}
}

// TestStopHolder: the proven holder gets SIGTERM, and Stop returns once it
// has released the directory.
func TestStopHolder(t *testing.T) {
	dir := testutil.DataDir(t)
	p := hold(t, dir)
	log, out := testLog()
	s := Stop{Log: log, Timeout: 30 * time.Second}
	if got := s.Run(dir); got != Done {
		t.Fatalf("stop: %v; log:\n%s", got, out)
	}
	if code, ok := p.Exited(10 * time.Second); !ok || code != 0 {
		t.Errorf("the holder: exited %v, code %d; want a clean exit on SIGTERM", ok, code)
	}
	for _, want := range []string{"signalled the holder", "signal=SIGTERM", "msg=stopped", "datadir=" + dir} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// TestStopKillAfter: a holder that ignores SIGTERM is still held at the
// timeout without KillAfter, and SIGKILLed at KillAfter with it.
func TestStopKillAfter(t *testing.T) {
	dir := testutil.DataDir(t)
	p := hold(t, dir, "ignore")
	log, out := testLog()
	s := Stop{Log: log, Timeout: 300 * time.Millisecond}
	if got := s.Run(dir); got != Failed || !strings.Contains(out.String(), "still held after the timeout") {
		t.Fatalf("stop without --kill-after: %v, want Failed; log:\n%s", got, out)
	}
	if !p.Alive() {
		t.Fatal("the holder died of SIGTERM, which it ignores")
	}
	s = Stop{Log: log, Timeout: 30 * time.Second, KillAfter: 200 * time.Millisecond, Signal: syscall.SIGTERM}
	if got := s.Run(dir); got != Done {
		t.Fatalf("stop with --kill-after: %v; log:\n%s", got, out)
	}
	if code, ok := p.Exited(10 * time.Second); !ok || code != -1 {
		t.Errorf("the holder: exited %v, code %d; want killed", ok, code)
	}
	if !strings.Contains(out.String(), "still held after --kill-after: sending SIGKILL") {
		t.Errorf("log does not say SIGKILL was sent:\n%s", out)
	}
}

// TestReload: the proven holder gets SIGHUP, and Reload does not wait.
func TestReload(t *testing.T) {
	dir := testutil.DataDir(t)
	p := hold(t, dir)
	log, out := testLog()
	if got := Reload(log, dir, interlock.Options{}); got != Done {
		t.Fatalf("reload: %v; log:\n%s", got, out)
	}
	p.Expect(t, "hup")
	if !strings.Contains(out.String(), "asked the holder to reload the server") || !strings.Contains(out.String(), "reload_signal=SIGHUP") {
		t.Errorf("log:\n%s", out)
	}
}

// TestReport: the states status and check report, with their exit
// statuses, and status's text.
func TestReport(t *testing.T) {
	dir := testutil.DataDir(t)
	rep, err := interlock.Inspect(dir, interlock.Options{})
	r := NewReport(dir, rep, err)
	if r.State != "free" || r.Service != ServiceStopped || r.StatusExit() != exitcode.StatusNotRunning || r.CheckExit() != exitcode.CheckFree || r.HeldHere() {
		t.Errorf("free: %+v", r)
	}
	var b bytes.Buffer
	if r.WriteStatus(&b) || !strings.HasPrefix(b.String(), "free: ") {
		t.Errorf("free: status text %q", b.String())
	}

	p := hold(t, dir)
	rep, err = interlock.Inspect(dir, interlock.Options{})
	r = NewReport(dir, rep, err)
	if r.State != "held" || r.Service != ServiceRunning || r.StatusExit() != exitcode.StatusRunning || r.CheckExit() != exitcode.CheckHeld ||
		!r.HeldHere() || r.PID != p.PID() || r.Started == "" || r.ShmID == nil {
		t.Errorf("held: %+v", r)
	}
	b.Reset()
	if !r.WriteStatus(&b) || !strings.HasPrefix(b.String(), "running: "+dir+"\n  pid "+fmt.Sprint(p.PID())+", main pid none yet,") {
		t.Errorf("held: status text %q", b.String())
	}

	r = NewReport(dir, nil, errors.New("bad\ndirectory"))
	if r.State != "invalid" || r.CheckExit() != exitcode.CheckInvalid || r.Service != "" {
		t.Errorf("invalid: %+v", r)
	}
	r.SetService()
	b.Reset()
	if r.Service != ServiceUnknown || r.StatusExit() != exitcode.StatusUnknown || r.WriteStatus(&b) || b.String() != "invalid: bad\\ndirectory\n" {
		t.Errorf("invalid: %+v, status text %q", r, b.String())
	}

	// A lease held elsewhere makes a free directory held (lease.go).
	r = NewReport(dir, nil, errors.New("x"))
	r.State, r.Status = "held", "stopping"
	r.SetService()
	if r.Service != ServiceStopping || r.StatusExit() != exitcode.StatusStopping || r.HeldHere() {
		t.Errorf("held through a lease, stopping: %+v", r)
	}
}

// TestWait: free at once when nobody holds the directory; a held one times
// out, then is reached when its holder marks itself ready or releases it;
// the lease is asked only once the directory itself is there, and until it
// answers nil the wait goes on.
func TestWait(t *testing.T) {
	dir := testutil.DataDir(t)
	log, out := testLog()
	if got := (&Wait{Log: log, Timeout: time.Second}).Run(dir); got != Done {
		t.Fatalf("free: %v; log:\n%s", got, out)
	}
	p := hold(t, dir)
	for _, ready := range []bool{false, true} {
		if got := (&Wait{Log: log, Ready: ready, Timeout: 200 * time.Millisecond}).Run(dir); got != Failed {
			t.Errorf("held, not ready, ready %v: %v, want Failed", ready, got)
		}
	}
	if !strings.Contains(out.String(), "timed out") {
		t.Errorf("log does not say it timed out:\n%s", out)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.Expect(t, "hup")
	var asked []bool
	lease := func(held bool, until time.Time) error {
		asked = append(asked, held)
		if until.IsZero() {
			t.Error("the lease was given no end, with a timeout")
		}
		if len(asked) < 3 {
			return errors.New("not yet")
		}
		return nil
	}
	if got := (&Wait{Log: log, Ready: true, Timeout: 30 * time.Second, Lease: lease}).Run(dir); got != Done {
		t.Fatalf("ready: %v; log:\n%s", got, out)
	}
	if len(asked) != 3 || !asked[0] || !asked[2] {
		t.Errorf("the lease was asked %v, want held thrice", asked)
	}
	done := make(chan Outcome)
	go func() { done <- (&Wait{Log: log, Timeout: 30 * time.Second}).Run(dir) }()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got != Done {
		t.Errorf("free after the release: %v", got)
	}
	if got := (&Wait{Log: log, Timeout: time.Second}).Run(filepath.Join(dir, "nosuch")); got != Unreadable {
		t.Errorf("a missing directory: %v, want Unreadable", got)
	}
}

// TestNotAllowed: another local user may neither stop nor reload a holder
// that runs as root, in a directory it can reach: it may not even inspect
// the directory (interlock refuses), nothing is signalled, and the holder
// holds on.
func TestNotAllowed(t *testing.T) {
	u := testutil.NewUser(t, "dl21c")
	parent, err := os.MkdirTemp("/tmp", "dl21c-data")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	dir := filepath.Join(parent, "data")
	for _, d := range []string{parent, dir} {
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := hold(t, dir)
	for _, action := range []string{"stop", "reload"} {
		out, err := u.Command(t, "act", dir, action).Output()
		if err != nil {
			t.Fatalf("%s as %s: %v", action, u.Name, err)
		}
		got, log, _ := strings.Cut(string(out), "\n")
		if got != fmt.Sprint(int(Unreadable)) || !strings.Contains(log, "only its owner and root may inspect it") {
			t.Errorf("%s as %s: outcome %s, want %d (Unreadable); log:\n%s", action, u.Name, got, Unreadable, log)
		}
	}
	if !p.Alive() {
		t.Fatal("the holder is dead")
	}
	select {
	case line := <-lines(p):
		t.Errorf("the holder was signalled: it said %q", line)
	case <-time.After(300 * time.Millisecond):
	}
	rep, err := interlock.Inspect(dir, interlock.Options{})
	if err != nil || rep.State != interlock.Held || rep.Record.PID != p.PID() {
		t.Errorf("the directory after the attempts: %v, %v; want held by %d", rep, err, p.PID())
	}
}

// lines delivers the helper's next line of output, if it says one.
func lines(p *testutil.Proc) <-chan string {
	c := make(chan string, 1)
	go func() {
		if l, err := p.ReadLine(time.Second); err == nil {
			c <- l
		}
	}()
	return c
}
