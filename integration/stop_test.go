package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

func TestStopLiveWrapper(t *testing.T) {
	dir := cliDataDir(t)
	w, _, child := cliHeld(t, dir, nil, "sleep", "300")
	code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "10s")
	if code != 0 || !strings.Contains(stderr, fmt.Sprintf("pid=%d signal=SIGTERM", w.PID())) || !strings.Contains(stderr, "msg=stopped") {
		t.Errorf("stop: exit %d, stderr %q; want 0, SIGTERM to %d, stopped", code, stderr, w.PID())
	}
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("wrapper exit %d after stop, want 143 (sleep killed by the forwarded SIGTERM); stderr:\n%s", code, w.Stderr())
	}
	if child.alive() {
		t.Errorf("the server %d outlived its wrapper", child.pid)
	}
	if code, r := check(t, dir); code != 0 || r.State != "free" {
		t.Errorf("check after stop: exit %d, %+v; want free", code, r)
	}

	// --signal INT reaches the server as SIGINT.
	w, _, _ = cliHeld(t, dir, nil, "sleep", "300")
	code, _, stderr = dirlockd(t, "stop", "-D", dir, "--signal", "int", "--timeout", "10s")
	if code != 0 || !strings.Contains(stderr, "signal=SIGINT") {
		t.Errorf("stop --signal int: exit %d, stderr %q", code, stderr)
	}
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGINT) {
		t.Errorf("wrapper exit %d after stop --signal INT, want 130; stderr:\n%s", code, w.Stderr())
	}

	// Nothing to stop.
	code, _, stderr = dirlockd(t, "stop", "-D", dir)
	if code != 0 || !strings.Contains(stderr, "not running: nothing to stop") {
		t.Errorf("stop of a free dir: exit %d, stderr %q; want 0, not running", code, stderr)
	}
	if code, r := check(t, dir); code != 0 || r.State != "free" {
		t.Errorf("check at the end: exit %d, %+v", code, r)
	}
}

// TestStopStalePIDReused: a stale record names a PID that now belongs to an
// unrelated live process. stop must not signal it.
func TestStopStalePIDReused(t *testing.T) {
	dir := cliDataDir(t)
	if code, _, stderr := dirlockd(t, "run", "-D", dir, "--", "true"); code != 0 {
		t.Fatalf("run -- true: exit %d; %s", code, stderr)
	}
	victim := exec.Command("sleep", "300")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { victim.Process.Kill(); victim.Wait() })

	path := filepath.Join(dir, pidfile.DefaultName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := pidfile.Parse(b)
	if err != nil {
		t.Fatalf("pidfile after run -- true: %v\n%s", err, b)
	}
	rec.PID, rec.Status = victim.Process.Pid, pidfile.Ready
	if err := os.WriteFile(path, rec.Marshal(), 0o600); err != nil {
		t.Fatal(err)
	}

	code, r := check(t, dir)
	if code != 0 || r.State != "stale" || r.PID != victim.Process.Pid ||
		!strings.Contains(r.Reason, fmt.Sprintf("previous holder PID %d ", victim.Process.Pid)) {
		t.Fatalf("check of the forged stale record: exit %d, %+v; want 0, stale, naming PID %d", code, r, victim.Process.Pid)
	}
	code, out, _ := dirlockd(t, "status", "-D", dir)
	if code != 1 || !strings.HasPrefix(out, "stale: ") {
		t.Errorf("status of a stale record: exit %d, %q; want LSB 1", code, out)
	}
	code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "2s", "--signal", "KILL")
	if code != 0 || !strings.Contains(stderr, "stale record, nothing signalled") ||
		!strings.Contains(stderr, fmt.Sprintf("previous holder PID %d", victim.Process.Pid)) {
		t.Errorf("stop of a stale record: exit %d, stderr %q; want 0, stale, nothing signalled", code, stderr)
	}
	// Nothing to poll for: a SIGKILL stop sent would take a moment to
	// show, and this grace is it.
	time.Sleep(100 * time.Millisecond)
	if !testutil.Alive(victim.Process.Pid) {
		st, _, _ := cliStat(victim.Process.Pid)
		t.Fatalf("stop signalled PID %d, an unrelated process that reused the recorded PID (state %q)", victim.Process.Pid, st)
	}
	if err := victim.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	victim.Wait()
}

// TestStopTimeoutThenKillAfter: a server that ignores SIGTERM outlasts
// --timeout; --kill-after then SIGKILLs every process proven to hold the
// lock.
func TestStopTimeoutThenKillAfter(t *testing.T) {
	dir := cliDataDir(t)
	w, _, sh := cliHeld(t, dir, []string{"--stop-timeout", "30s"}, "sh", "-c", `trap "" TERM; sleep 300`)
	// sh forks sleep (or, for a shell that execs its last command, becomes
	// it); either way a sleep ignoring SIGTERM holds the inherited lock.
	var sleeper *cliPinned
	testutil.Eventually(t, 5*time.Second, "the server's sleep", func() bool {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", sh.pid))
		return string(comm) == "sleep\n" || childOf(sh.pid) != sh.pid
	})
	if c := childOf(sh.pid); c != sh.pid {
		sleeper = cliPin(t, c, sh.pid)
		if _, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", c)); err != nil {
			t.Fatalf("sleep %d did not inherit the lock as fd 3: %v", c, err)
		}
	}

	start := time.Now()
	code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "1s")
	if code != 1 || !strings.Contains(stderr, "still held after the timeout") {
		t.Errorf("stop --timeout 1s against a server ignoring SIGTERM: exit %d, stderr %q; want 1, still held", code, stderr)
	}
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Errorf("stop --timeout 1s gave up after %v", el)
	}
	if !sh.alive() || (sleeper != nil && !sleeper.alive()) {
		t.Fatalf("the server died of SIGTERM; it should ignore it")
	}
	if code, r := check(t, dir); code != 1 || r.State != "held" || r.Status != "stopping" {
		t.Errorf("check after the timed-out stop: exit %d, %+v; want held, stopping", code, r)
	}

	code, _, stderr = dirlockd(t, "stop", "-D", dir, "--timeout", "10s", "--kill-after", "500ms")
	if code != 0 || !strings.Contains(stderr, "sending SIGKILL") || !strings.Contains(stderr, "msg=stopped") ||
		!strings.Contains(stderr, fmt.Sprintf("pid=%d ", w.PID())) || !strings.Contains(stderr, fmt.Sprintf("pid=%d ", sh.pid)) {
		t.Errorf("stop --kill-after 500ms: exit %d, stderr %q; want 0 after SIGKILLing wrapper %d and server %d", code, stderr, w.PID(), sh.pid)
	}
	if code := w.WaitExit(t, 10*time.Second); code != -1 {
		t.Errorf("wrapper exit %d, want -1 (SIGKILLed by stop --kill-after)", code)
	}
	testutil.Eventually(t, 5*time.Second, "the server's processes to die", func() bool {
		return !sh.alive() && (sleeper == nil || !sleeper.alive())
	})
	// The SIGKILLed wrapper could not release: stale, and the next start
	// reclaims its segment.
	if code, r := check(t, dir); code != 0 || r.State != "stale" || !strings.Contains(r.Reason, fmt.Sprintf("previous holder PID %d", w.PID())) {
		t.Errorf("check after the kill: exit %d, %+v; want 0, stale", code, r)
	}
	if code, _, stderr := dirlockd(t, "wait", "-D", dir, "--for", "free", "--timeout", "2s"); code != 0 {
		t.Errorf("wait --for free on the stale record: exit %d, %q; want 0", code, stderr)
	}
	cliReclaim(t, dir)
}

// TestStopKillAfterSparesNextHolder: once the signalled holder has
// released, whoever takes the lock next is not what stop was asked to stop,
// and --kill-after must not SIGKILL it: neither a process queued on the lock
// (as a starter is in the moment before it writes its record) nor another
// dirlockd run that was waiting for the directory.
func TestStopKillAfterSparesNextHolder(t *testing.T) {
	dir := cliDataDir(t)
	path := filepath.Join(dir, pidfile.DefaultName)

	// A process blocked in flock(2) on the pidfile gets the lock the moment
	// the holder releases it, then becomes sleep, keeping the descriptor.
	w, _, _ := cliHeld(t, dir, nil, "sleep", "300")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	queued := exec.Command("sh", "-c", `exec 9<"$0" && flock 9 && exec sleep 300`, path)
	if err := queued.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { queued.Process.Kill(); queued.Wait() })
	testutil.Eventually(t, 5*time.Second, "a process queued on the pidfile lock", func() bool {
		b, _ := os.ReadFile("/proc/locks")
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "->") && strings.Contains(l, fmt.Sprintf(":%d ", st.Sys().(*syscall.Stat_t).Ino)) {
				return true
			}
		}
		return false
	})
	code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "1500ms", "--kill-after", "300ms")
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("wrapper exit %d after stop, want 143", code)
	}
	if !testutil.Alive(queued.Process.Pid) {
		t.Errorf("stop --kill-after SIGKILLed PID %d, which took the lock after the signalled holder released it; stop: exit %d, %s",
			queued.Process.Pid, code, stderr)
	} else if code != 1 || !strings.Contains(stderr, "still held after the timeout") || strings.Contains(stderr, "sending SIGKILL") {
		t.Errorf("stop with the lock taken by another process: exit %d, stderr %q; want 1, still held, nothing killed", code, stderr)
	}
	queued.Process.Kill()
	queued.Wait()
	if code, r := check(t, dir); code != 0 || r.State != "free" {
		t.Fatalf("check once the queued process is gone: exit %d, %+v", code, r)
	}

	// Another dirlockd run waits for the directory and takes it over.
	w, _, _ = cliHeld(t, dir, nil, "sleep", "300")
	next := startRun(t, nil, dir, []string{"--wait", "30s"}, "sleep", "300")
	waitOpened(t, next, dir) // it is acquiring, waiting
	code, _, stderr = dirlockd(t, "stop", "-D", dir, "--timeout", "3s", "--kill-after", "200ms")
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("first wrapper exit %d after stop, want 143", code)
	}
	// Whether stop saw the directory free in between or saw the takeover,
	// the new instance must survive.
	t.Logf("stop while another run waited: exit %d", code)
	if code != 0 && (code != 1 || !strings.Contains(stderr, "another instance")) || strings.Contains(stderr, "sending SIGKILL") {
		t.Errorf("stop while another run waited: exit %d, stderr %q; want 0, or 1 naming another instance, and nothing killed", code, stderr)
	}
	r := waitHeld(t, dir, "ready", 10*time.Second)
	select {
	case <-next.Done():
		t.Fatalf("the waiting run died: exit %d; stop: %s\nits stderr:\n%s", next.Cmd.ProcessState.ExitCode(), stderr, next.Stderr())
	default:
	}
	if r.PID != next.PID() {
		t.Fatalf("held by PID %d, want the waiting run %d", r.PID, next.PID())
	}
	cliPin(t, r.ChildPID, next.PID())
	if code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "10s"); code != 0 {
		t.Errorf("stop of the new instance: exit %d; %s", code, stderr)
	}
	if code := next.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("second wrapper exit %d after stop, want 143", code)
	}
}

func TestStopUsage(t *testing.T) {
	dir := cliDataDir(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--signal", "BOGUS"}, `--signal: unknown signal "BOGUS"`},
		{[]string{"--signal", "99"}, "out of range"},
		{[]string{"--timeout", "0"}, "--timeout must be positive"},
		{[]string{"--timeout", "-1s"}, "--timeout must be positive"},
		{[]string{"--timeout", "1s", "--kill-after", "2s"}, "--kill-after 2s must be shorter than --timeout 1s"},
		{[]string{"--timeout", "1s", "--kill-after", "1s"}, "--kill-after 1s must be shorter than --timeout 1s"},
		{[]string{"--kill-after", "90s"}, "--kill-after 1m30s must be shorter than --timeout 1m0s"}, // the default --timeout
		{[]string{"--kill-after", "-1s"}, "--kill-after must not be negative"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		code, out, stderr := dirlockd(t, append([]string{"stop", "-D", dir}, c.args...)...)
		if code != exitcode.Usage || out != "" || !strings.Contains(stderr, c.want) || !strings.Contains(stderr, `Run "dirlockd stop --help"`) {
			t.Errorf("stop %v: exit %d, stdout %q, stderr %q; want 64 and %q", c.args, code, out, stderr, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, pidfile.DefaultName)); err == nil {
		t.Errorf("a refused stop touched the data directory")
	}
}
