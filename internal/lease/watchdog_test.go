package lease

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/proc"
)

// TestMain runs the watchdog process when the test binary is started as
// one (StartWatchdog's executable).
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "-watchdog" {
		at, _ := strconv.ParseInt(os.Args[2], 10, 64)
		os.Exit(RunWatchdog(at, 3, os.Stderr))
	}
	os.Exit(m.Run())
}

// startSleeper starts a process the watchdog is to guard: a child of ours,
// not reaped by anyone else.
func startSleeper(t *testing.T) (*exec.Cmd, proc.Pinned) {
	t.Helper()
	c := exec.Command("sleep", "30")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	p, ok := proc.PinChild(c.Process.Pid, 0)
	if !ok {
		t.Fatal("cannot pin the sleeper")
	}
	t.Cleanup(func() { p.Close() })
	return c, p
}

// TestWatchdogKills: a watchdog that is fed a tree and then not fed again
// SIGKILLs it at the kill time, not before; fed a later time, it waits for
// that.
func TestWatchdogKills(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_, p := startSleeper(t)
	w, err := StartWatchdog(Now()+time.Hour, self, "test", "-watchdog")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		w.Bye()
		syscall.Wait4(w.PID(), nil, 0, nil)
	}()
	fed := Now()
	if err := w.Feed(fed+400*time.Millisecond, proc.Tree{p}); err != nil {
		t.Fatal(err)
	}
	if p.WaitExit(200 * time.Millisecond) {
		t.Fatal("killed 200 ms before its kill time")
	}
	if err := w.Feed(fed+800*time.Millisecond, proc.Tree{p}); err != nil {
		t.Fatal(err)
	}
	if p.WaitExit(400 * time.Millisecond) {
		t.Fatal("killed at the old kill time, after a newer one was fed")
	}
	if !p.WaitExit(10 * time.Second) {
		t.Fatal("not killed within 10 s of its kill time")
	}
	if late := Now() - (fed + 800*time.Millisecond); late < 0 {
		t.Fatalf("killed %v early", -late)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(w.PID(), &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
		t.Fatalf("watchdog: %v, status %v", err, ws)
	}
}

// TestWatchdogBye: told bye, the watchdog exits and kills nobody, even past
// its kill time.
func TestWatchdogBye(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_, p := startSleeper(t)
	w, err := StartWatchdog(Now()+300*time.Millisecond, self, "test", "-watchdog")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Feed(Now()+300*time.Millisecond, proc.Tree{p}); err != nil {
		t.Fatal(err)
	}
	w.Bye()
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(w.PID(), &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
		t.Fatalf("watchdog: %v, status %v", err, ws)
	}
	if p.WaitExit(600 * time.Millisecond) {
		t.Fatal("the watchdog killed the tree after bye")
	}
}
