package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/fault"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// TestWrapperKilledServerKeepsDirectory: SIGKILL the wrapper while the server
// lives. The server keeps the lock through the inherited descriptor; check
// names it as an orphan and run refuses with 76, naming the command that
// stops it (dirlockd stop --survivors). Once the server is gone,
// check says the previous holder did not shut down cleanly, and run starts.
func TestWrapperKilledServerKeepsDirectory(t *testing.T) {
	dir := testutil.DataDir(t)
	w := startRun(t, nil, dir, nil, "sleep", "300")
	server := waitHeld(t, dir, "ready", 10*time.Second).ChildPID
	t.Cleanup(func() { syscall.Kill(server, syscall.SIGKILL) })
	w.Cmd.Process.Signal(syscall.SIGKILL)
	w.WaitExit(t, 10*time.Second)

	code, r := check(t, dir)
	if code != 2 || r.State != "orphans" || !slices.Equal(r.Orphans, []int{server}) {
		t.Fatalf("check after the wrapper was killed: exit %d, %+v; want 2, orphans [%d]", code, r, server)
	}
	code, _, stderr := dirlockd(t, "run", "-D", dir, "--", "true")
	if code != exitcode.Orphans || !strings.Contains(stderr, strconv.Itoa(server)) || !strings.Contains(stderr, "sleep 300") ||
		!strings.Contains(stderr, "(dirlockd stop -D "+dir+" --survivors)") {
		t.Errorf("run against orphans: exit %d, stderr %q; want 76 naming %d, its command line and the command that stops it", code, stderr, server)
	}

	killWait(t, server)
	code, r = check(t, dir)
	if code != 0 || r.State != "stale" || !strings.Contains(r.Reason, fmt.Sprintf("previous holder PID %d (started", w.PID())) ||
		!strings.Contains(r.Reason, "did not shut down cleanly") {
		t.Errorf("check after the server died: exit %d, %+v", code, r)
	}
	code, _, stderr = dirlockd(t, "run", "-D", dir, "--", "true")
	if code != 0 || !strings.Contains(stderr, "did not shut down cleanly") {
		t.Errorf("run after the orphan died: exit %d, stderr %q", code, stderr)
	}
}

func TestExitStatus(t *testing.T) {
	dir := testutil.DataDir(t)
	notExec := filepath.Join(t.TempDir(), "script")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	for _, c := range []struct {
		name string
		args []string
		want int
		text string
	}{
		{"exit 0", []string{"-D", dir, "--", "true"}, 0, "released the data directory"},
		{"exit 3", []string{"-D", dir, "--", "sh", "-c", "exit 3"}, 3, "status=3"},
		{"killed by SIGTERM", []string{"-D", dir, "--", "sh", "-c", "kill -TERM $$"}, 143, "SIGTERM"},
		{"not found", []string{"-D", dir, "--", "/nonexistent/server"}, 127, "cannot execute"},
		{"not executable", []string{"-D", dir, "--", notExec}, 126, "permission denied"},
		{"no command", []string{"-D", dir}, 64, "no command"},
		{"bad on-lost", []string{"-D", dir, "--on-lost", "panic", "--", "true"}, 64, "--on-lost"},
		{"bad duration", []string{"-D", dir, "--wait", "soon", "--", "true"}, 64, "invalid argument"},
		{"invalid dir", []string{"-D", dir + "/missing", "--", "true"}, 78, "install -d -m 0700"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, stderr := dirlockd(t, append([]string{"run"}, c.args...)...)
			if code != c.want || !strings.Contains(out+stderr, c.text) {
				t.Errorf("exit %d, output %q; want %d mentioning %q", code, out+stderr, c.want, c.text)
			}
		})
	}
}

// TestChildEnvironment: the server gets dirlockd's variables, replacing any
// the caller had, and keeps every other variable (other DIRLOCKD_ ones too).
func TestChildEnvironment(t *testing.T) {
	dir := testutil.DataDir(t)
	cmd := exec.Command(bin, "run", "-D", dir, "--", "sh", "-c",
		`echo "token=$DIRLOCKD_TOKEN fd=$DIRLOCKD_LOCK_FD datadir=$DIRLOCKD_DATADIR other=$DIRLOCKD_OTHER notify=$NOTIFY_SOCKET"; `+
			`readlink /proc/self/fd/3`)
	cmd.Env = append(os.Environ(), "DIRLOCKD_OTHER=kept", "DIRLOCKD_TOKEN=forged", "NOTIFY_SOCKET=/forged")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if !strings.Contains(s, "other=kept") || strings.Contains(s, "forged") || !strings.Contains(s, "fd=3 datadir="+dir) ||
		!strings.Contains(s, filepath.Join(dir, pidfile.DefaultName)) || !strings.Contains(s, "notify=@dirlockd/notify/") {
		t.Errorf("server's view:\n%s", s)
	}
}

func TestSignals(t *testing.T) {
	dir := testutil.DataDir(t)
	// The server reports the signals it gets on stdout.
	w := startRun(t, nil, dir, nil, "sh", "-c",
		`trap 'echo got-usr1' USR1; trap 'echo got-hup' HUP; trap 'echo got-usr2' USR2; echo up; while :; do sleep 0.05; done`)
	waitHeld(t, dir, "ready", 10*time.Second)
	testutil.Eventually(t, 5*time.Second, "the server's trap set-up", func() bool { return strings.Contains(w.Stdout(), "up") })
	for s, want := range map[syscall.Signal]string{syscall.SIGUSR1: "got-usr1", syscall.SIGHUP: "got-hup", syscall.SIGUSR2: "got-usr2"} {
		w.Cmd.Process.Signal(s)
		testutil.Eventually(t, 5*time.Second, "the server to get "+s.String(), func() bool { return strings.Contains(w.Stdout(), want) })
	}
	w.Cmd.Process.Signal(syscall.SIGTERM)
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("exit %d after SIGTERM, want 143", code)
	}
}

// TestStopTimeoutKills: a server that ignores SIGTERM gets SIGKILL after
// --stop-timeout, the whole group with --signal-group. Neither a second
// SIGTERM nor the server's own STOPPING=1 may disarm that timer.
func TestStopTimeoutKills(t *testing.T) {
	// As sd_notify(3) does, "@" stands for the abstract namespace's NUL.
	const announce = `python3 -c 'import os, socket; a = os.environ["NOTIFY_SOCKET"]; a = "\0" + a[1:] if a[0] == "@" else a; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"STOPPING=1", a)'; `
	for _, c := range []struct{ name, prelude string }{
		{"plain", ""},
		{"server said STOPPING=1", announce},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			w := startRun(t, nil, dir, []string{"--stop-timeout", "500ms", "--signal-group"},
				"sh", "-c", `trap '' TERM; `+c.prelude+`echo up; while :; do sleep 0.05; done`)
			waitHeld(t, dir, "", 10*time.Second)
			testutil.Eventually(t, 5*time.Second, "the server's set-up", func() bool { return strings.Contains(w.Stdout(), "up") })
			if c.prelude != "" {
				testutil.Eventually(t, 5*time.Second, "status stopping", func() bool { _, r := check(t, dir); return r.Status == "stopping" })
			}
			start := time.Now()
			w.Cmd.Process.Signal(syscall.SIGTERM)
			time.Sleep(100 * time.Millisecond)
			w.Cmd.Process.Signal(syscall.SIGTERM) // must not restart or cancel the timer
			code := w.WaitExit(t, 10*time.Second)
			if took := time.Since(start); code != exitcode.SignalBase+int(syscall.SIGKILL) || took < 400*time.Millisecond || took > 3*time.Second {
				t.Errorf("exit %d after %v, want 137 after the 500ms stop timeout; stderr:\n%s", code, took, w.Stderr())
			}
			if !strings.Contains(w.Stderr(), "sending SIGKILL") {
				t.Errorf("no SIGKILL logged:\n%s", w.Stderr())
			}
			if code, r := check(t, dir); code != 0 {
				t.Errorf("check after the kill: exit %d, %+v (processes of the group left behind?)", code, r)
			}
		})
	}
}

// TestRecheck: deleting or replacing the pidfile under a running wrapper is
// found by the recheck, and the server is stopped within two intervals.
func TestRecheck(t *testing.T) {
	for _, damage := range []string{"deleted", "replaced"} {
		t.Run(damage, func(t *testing.T) {
			dir := testutil.DataDir(t)
			const interval = 300 * time.Millisecond
			w := startRun(t, nil, dir, []string{"--recheck", interval.String()}, "sleep", "300")
			waitHeld(t, dir, "ready", 10*time.Second)
			path := filepath.Join(dir, pidfile.DefaultName)
			testutil.Eventually(t, 5*time.Second, "a heartbeat", func() bool {
				b, _ := os.ReadFile(path)
				r, err := pidfile.Parse(b)
				return err == nil && r.Extra["heartbeat"] != ""
			})
			start := time.Now()
			if damage == "deleted" {
				os.Remove(path)
			} else {
				os.WriteFile(path+".new", []byte("not yours\n"), 0o600)
				os.Rename(path+".new", path)
			}
			code := w.WaitExit(t, 10*time.Second)
			if took := time.Since(start); took > 2*interval+200*time.Millisecond {
				t.Errorf("server stopped %v after the pidfile was %s; want within two intervals (%v)", took, damage, 2*interval)
			}
			if code != exitcode.SignalBase+int(syscall.SIGTERM) || !strings.Contains(w.Stderr(), "interlock is lost") {
				t.Errorf("exit %d; stderr:\n%s", code, w.Stderr())
			}
		})
	}
}

// TestPID1ReapsOrphans runs dirlockd as PID 1 of a new PID namespace. The
// server leaves a grandchild behind that exits; dirlockd must reap it.
func TestPID1ReapsOrphans(t *testing.T) {
	dir := testutil.DataDir(t)
	w := startRun(t, []string{"unshare", "--pid", "--fork", "--kill-child", "--mount-proc"}, dir, nil,
		"sh", "-c", `(sleep 0.2 &); echo spawned; sleep 300`)
	testutil.Eventually(t, 10*time.Second, "the server to spawn its grandchild", func() bool {
		return strings.Contains(w.Stdout(), "spawned")
	})
	init := childOf(w.PID())
	// The grandchild, reparented to dirlockd, exits after 0.2 s; until
	// dirlockd reaps it, it stays its child, a zombie.
	var kids, zombies []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		kids, zombies = nil, nil
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", init))
		for _, f := range tasks {
			b, _ := os.ReadFile(f)
			kids = append(kids, strings.Fields(string(b))...)
		}
		for _, k := range kids {
			if n, _ := strconv.Atoi(k); isZombie(n) {
				zombies = append(zombies, k)
			}
		}
		if len(kids) == 1 && len(zombies) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(kids) != 1 || len(zombies) > 0 {
		t.Errorf("children of dirlockd as PID 1 after 10s: %v, zombies %v; want only the server (the grandchild reaped)", kids, zombies)
	}
	syscall.Kill(init, syscall.SIGTERM)
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("exit %d; stderr:\n%s", code, w.Stderr())
	}
}

// TestInternalError: a failure of dirlockd's own (here: the notify socket,
// failed by the faultinject build) exits 70 and still releases the lock.
func TestInternalError(t *testing.T) {
	dir := testutil.DataDir(t)
	cmd := exec.Command(binFault, "run", "-D", dir, "--", "true")
	cmd.Env = append(os.Environ(), fault.Env+"=notify")
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != exitcode.Internal || !strings.Contains(string(out), "cannot listen for notifications") {
		t.Errorf("exit %d, output %s; want 70", code, out)
	}
	if code, r := check(t, dir); code != 0 || r.Status != "stopped" {
		t.Errorf("after the internal error: check exit %d, %+v; want free and a record marked stopped", code, r)
	}
	if code, out, _ := dirlockd(t, "version"); code != 0 || !strings.HasPrefix(out, "dirlockd ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
}

// isZombie reports whether pid has exited and waits to be reaped.
func isZombie(pid int) bool {
	st, err := proc.ReadStat(pid)
	return err == nil && st.State == 'Z'
}
