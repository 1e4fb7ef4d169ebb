package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// pidsIn waits until the server has written n PIDs, a line each, to file.
func pidsIn(t *testing.T, file string, n int) []int {
	t.Helper()
	var pids []int
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("%d PIDs in %s", n, file), func() bool {
		b, _ := os.ReadFile(file)
		pids = pids[:0]
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				pids = append(pids, p)
			}
		}
		return len(pids) >= n
	})
	return pids
}

// TestForkingRedis: redis-server --daemonize yes forks and its command
// exits at once. dirlockd must keep holding the directory for the daemon,
// name it as the main process, stop it on "dirlockd stop", and mark the
// record stopped only once it is gone. Three rounds, with and without
// --main-pid-file.
func TestForkingRedis(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			dir := testutil.DataDir(t)
			port := testutil.FreePort(t)
			var flags []string
			if round == 2 {
				flags = []string{"--main-pid-file", filepath.Join(dir, "redis.pid")}
			}
			w := startRun(t, nil, dir, flags, "redis-server", "--daemonize", "yes", "--port", strconv.Itoa(port),
				"--bind", "127.0.0.1", "--dir", dir, "--save", "", "--logfile", filepath.Join(dir, "redis.log"),
				"--pidfile", filepath.Join(dir, "redis.pid"))
			var r testutil.Report
			testutil.Eventually(t, 20*time.Second, "redis as the main process", func() bool {
				_, r = check(t, dir)
				return r.State == "held" && r.MainPID > 0 && r.MainPID != r.ChildPID
			})
			daemon := r.MainPID
			if got := redisDo(t, port, "PING"); got != "+PONG" {
				t.Fatalf("PING: %q", got)
			}
			if testutil.Alive(r.ChildPID) {
				t.Errorf("the command (PID %d) still runs; redis should have daemonized", r.ChildPID)
			}
			if !strings.Contains(readFile(t, fmt.Sprintf("/proc/%d/cmdline", daemon)), "redis-server") {
				t.Errorf("main PID %d is not redis", daemon)
			}
			code, out, _ := dirlockd(t, "status", "-D", dir)
			if code != 0 || !strings.Contains(out, fmt.Sprintf("main pid %d (command pid %d)", daemon, r.ChildPID)) {
				t.Errorf("status: exit %d\n%s", code, out)
			}
			redisDo(t, port, "SET k v")
			if code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "20s"); code != 0 {
				t.Fatalf("stop: exit %d\n%s", code, stderr)
			}
			if code := w.WaitExit(t, 20*time.Second); code != 0 {
				t.Errorf("wrapper exit %d, want redis's 0; stderr:\n%s", code, w.Stderr())
			}
			if testutil.Alive(daemon) {
				t.Errorf("redis (PID %d) survived the stop", daemon)
			}
			if rec := recordOf(t, dir); rec.Status != pidfile.Stopped {
				t.Errorf("record status %q after the stop", rec.Status)
			}
			if code, r := check(t, dir); code != 0 || r.State != "free" {
				t.Errorf("check after stop: exit %d, %+v", code, r)
			}
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, _ := os.ReadFile(path)
	return string(b)
}

// shellDaemon is a server that daemonizes the way init scripts do: a double
// fork, setsid, every descriptor closed (the inherited lock too) and an
// environment cleared (no DIRLOCKD_TOKEN), then the daemon itself. It
// writes the daemon's PID to $1 and exits 0.
const shellDaemon = `(setsid env -i sh -c 'echo $$ > "$0"; exec </dev/null >/dev/null 2>&1 3>&-; exec sleep 300' "$1" &); exit 0`

// TestShellDaemon: a daemon that has shed every inherited witness is still
// the server: dirlockd holds the directory while it lives, SIGTERM reaches
// it, and the record says stopped only after it is gone.
func TestShellDaemon(t *testing.T) {
	const rounds = 5
	for round := range rounds {
		dir := testutil.DataDir(t)
		pidFile := filepath.Join(t.TempDir(), "daemon.pid")
		w := startRun(t, nil, dir, nil, "sh", "-c", shellDaemon, "sh", pidFile)
		daemon := pidsIn(t, pidFile, 1)[0]
		var r testutil.Report
		testutil.Eventually(t, 10*time.Second, "the daemon as the main process", func() bool {
			_, r = check(t, dir)
			return r.MainPID == daemon
		})
		if code := r.State; code != "held" || testutil.Alive(r.ChildPID) {
			t.Fatalf("round %d: %+v; want held, the command gone", round, r)
		}
		if env := readFile(t, fmt.Sprintf("/proc/%d/environ", daemon)); strings.Contains(env, "DIRLOCKD_") {
			t.Fatalf("round %d: the daemon kept dirlockd's environment: the test server is wrong", round)
		}
		w.Cmd.Process.Signal(syscall.SIGTERM)
		if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
			t.Errorf("round %d: wrapper exit %d, want 143 (the daemon killed by SIGTERM); stderr:\n%s", round, code, w.Stderr())
		}
		if testutil.Alive(daemon) {
			t.Errorf("round %d: the daemon survived", round)
		}
		if rec := recordOf(t, dir); rec.Status != pidfile.Stopped {
			t.Errorf("round %d: record status %q", round, rec.Status)
		}
	}
	t.Logf("%d rounds", rounds)
}

// TestStoppedMeansTreeGone races the release against the tree's exit: the
// command starts two background processes of different lifetimes and exits.
// Whenever the record says stopped, none of them may be alive. 20 rounds,
// the record polled as fast as it can be read.
func TestStoppedMeansTreeGone(t *testing.T) {
	const rounds = 20
	polls := 0
	for round := range rounds {
		dir := testutil.DataDir(t)
		pidFile := filepath.Join(t.TempDir(), "pids")
		w := startRun(t, nil, dir, nil, "sh", "-c", `sleep 0.3 & echo $! >> "$1"; sleep 0.5 & echo $! >> "$1"; exit 0`, "sh", pidFile)
		pids := pidsIn(t, pidFile, 2)
		for {
			b, err := os.ReadFile(filepath.Join(dir, pidfile.DefaultName))
			polls++
			if r, perr := pidfile.Parse(b); err == nil && perr == nil && r.Status == pidfile.Stopped {
				for _, p := range pids {
					if testutil.Alive(p) {
						t.Fatalf("round %d: the record says stopped while PID %d of the tree lives", round, p)
					}
				}
				break
			}
			select {
			case <-w.Done():
				if r := recordOf(t, dir); r.Status != pidfile.Stopped {
					t.Fatalf("round %d: wrapper exited, record status %q", round, r.Status)
				}
			default:
				continue
			}
			break
		}
		if code := w.WaitExit(t, 10*time.Second); code != 0 {
			t.Errorf("round %d: exit %d", round, code)
		}
	}
	t.Logf("%d rounds, %d record reads", rounds, polls)
}

// TestSeveralLeft: the command leaves two processes and exits: there is no
// main process, status says so, and SIGTERM reaches both.
func TestSeveralLeft(t *testing.T) {
	dir := testutil.DataDir(t)
	pidFile := filepath.Join(t.TempDir(), "pids")
	w := startRun(t, nil, dir, nil, "sh", "-c", `sleep 300 & echo $! >> "$1"; sleep 300 & echo $! >> "$1"; exit 0`, "sh", pidFile)
	pids := pidsIn(t, pidFile, 2)
	testutil.Eventually(t, 10*time.Second, "the command to exit", func() bool { return strings.Contains(w.Stderr(), "the command exited") })
	code, out, _ := dirlockd(t, "status", "-D", dir)
	if code != 0 || !strings.Contains(out, "main pid none") {
		t.Errorf("status with no main process: exit %d\n%s", code, out)
	}
	if code, r := check(t, dir); code != 1 || r.MainPID != 0 {
		t.Errorf("check: exit %d, %+v; want held with no main PID", code, r)
	}
	w.Cmd.Process.Signal(syscall.SIGTERM)
	if code := w.WaitExit(t, 10*time.Second); code != 0 {
		t.Errorf("exit %d, want the command's 0; stderr:\n%s", code, w.Stderr())
	}
	for _, p := range pids {
		if testutil.Alive(p) {
			t.Errorf("PID %d survived SIGTERM", p)
		}
	}
}

// TestFailingCommand: a command that fails has failed the server, even if it
// leaves one process behind that would otherwise become the main process:
// what it left is stopped, and run exits with the command's status.
func TestFailingCommand(t *testing.T) {
	dir := testutil.DataDir(t)
	pidFile := filepath.Join(t.TempDir(), "pids")
	w := startRun(t, nil, dir, nil, "sh", "-c", `sleep 300 & echo $! >> "$1"; exit 3`, "sh", pidFile)
	left := pidsIn(t, pidFile, 1)[0]
	if code := w.WaitExit(t, 10*time.Second); code != 3 {
		t.Errorf("exit %d, want the command's 3; stderr:\n%s", code, w.Stderr())
	}
	if testutil.Alive(left) {
		t.Errorf("PID %d, left by the failed command, survived", left)
	}
	if s := w.Stderr(); !strings.Contains(s, "the command failed (status 3)") {
		t.Errorf("no log of the failed start:\n%s", s)
	}
}

// TestMainExitStopsTheRest: with --main-pid-file, the main process's exit
// ends the server: the processes left get SIGTERM, then SIGKILL after the
// stop timeout when they ignore it, and run exits with the main process's
// status.
func TestMainExitStopsTheRest(t *testing.T) {
	dir := testutil.DataDir(t)
	tmp := t.TempDir()
	mainFile, pidFile := filepath.Join(tmp, "main.pid"), filepath.Join(tmp, "pids")
	w := startRun(t, nil, dir, []string{"--main-pid-file", mainFile, "--stop-timeout", "1s"}, "sh", "-c",
		`sh -c 'sleep 300' & echo $! > "$1"; sh -c 'trap "" TERM; while :; do sleep 0.05; done' & echo $! >> "$2"; exit 0`,
		"sh", mainFile, pidFile)
	main := pidsIn(t, mainFile, 1)[0]
	stubborn := pidsIn(t, pidFile, 1)[0]
	testutil.Eventually(t, 10*time.Second, "the main process from the file", func() bool { _, r := check(t, dir); return r.MainPID == main })
	syscall.Kill(main, syscall.SIGUSR1) // a process our test started, through the wrapper
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGUSR1) {
		t.Errorf("exit %d, want 138 (the main process killed by SIGUSR1); stderr:\n%s", code, w.Stderr())
	}
	if testutil.Alive(stubborn) {
		t.Errorf("PID %d, which ignores SIGTERM, survived the stop timeout", stubborn)
	}
	if s := w.Stderr(); !strings.Contains(s, "sending SIGKILL") {
		t.Errorf("no SIGKILL escalation logged:\n%s", s)
	}
}

// TestMainPIDFileForeign: a --main-pid-file that names a process outside the
// tree (here: the test itself) is refused, and the stop never signals it.
func TestMainPIDFileForeign(t *testing.T) {
	dir := testutil.DataDir(t)
	mainFile := filepath.Join(t.TempDir(), "main.pid")
	os.WriteFile(mainFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	w := startRun(t, nil, dir, []string{"--main-pid-file", mainFile}, "sleep", "300")
	testutil.Eventually(t, 10*time.Second, "the refusal", func() bool {
		return strings.Contains(w.Stderr(), fmt.Sprintf("PID %d is not a live process of the server's tree", os.Getpid()))
	})
	// SIGTERM would end this test; SIGUSR2 would too (not handled).
	w.Cmd.Process.Signal(syscall.SIGTERM)
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("exit %d, want 143 (sleep killed by SIGTERM); stderr:\n%s", code, w.Stderr())
	}
}

// TestSignalsWhileAcquiring: a run waiting for a held directory gives up on
// SIGTERM (143) and SIGINT (130) at once, and passes SIGHUP on to its server
// once it is ready (--ready-notify); without a readiness protocol, it drops
// SIGHUP and says so.
func TestSignalsWhileAcquiring(t *testing.T) {
	dir := testutil.DataDir(t)
	holder := startRun(t, nil, dir, nil, "sleep", "300")
	waitHeld(t, dir, "ready", 10*time.Second)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		w := startRun(t, nil, dir, []string{"--wait", "60s"}, "true")
		waitOpened(t, w, dir)
		start := time.Now()
		w.Cmd.Process.Signal(sig)
		if code := w.WaitExit(t, 10*time.Second); code != 128+int(sig) {
			t.Errorf("%v while waiting: exit %d, want %d; stderr:\n%s", sig, code, 128+int(sig), w.Stderr())
		}
		t.Logf("%v: gave up after %v", sig, time.Since(start).Round(time.Millisecond))
	}
	// Each waiter behind a holder of its own directory.
	dir2 := testutil.DataDir(t)
	holder2 := startRun(t, nil, dir2, nil, "sleep", "300")
	waitHeld(t, dir2, "ready", 10*time.Second)
	server := []string{"sh", "-c", `trap 'echo got-hup' HUP; systemd-notify --ready; while :; do sleep 0.05; done`}
	ready := startRun(t, nil, dir, []string{"--wait", "60s", "--ready-notify"}, server...)
	plain := startRun(t, nil, dir2, []string{"--wait", "60s"}, "sleep", "300")
	for _, w := range []*testutil.Proc{ready, plain} {
		waitOpened(t, w, "")
		w.Cmd.Process.Signal(syscall.SIGHUP)
	}
	testutil.Eventually(t, 10*time.Second, "the waiters to take SIGHUP", func() bool {
		return !sigPending(ready.PID(), syscall.SIGHUP) && !sigPending(plain.PID(), syscall.SIGHUP)
	})
	for _, h := range []*testutil.Proc{holder, holder2} {
		h.Cmd.Process.Signal(syscall.SIGTERM)
		h.WaitExit(t, 10*time.Second)
	}
	testutil.Eventually(t, 20*time.Second, "the ready server to get the early SIGHUP", func() bool { return strings.Contains(ready.Stdout(), "got-hup") })
	if !strings.Contains(ready.Stderr(), "passing on a signal received while acquiring") {
		t.Errorf("no log of the early signal:\n%s", ready.Stderr())
	}
	ready.Cmd.Process.Signal(syscall.SIGTERM)
	ready.WaitExit(t, 10*time.Second)
	testutil.Eventually(t, 20*time.Second, "the drop to be logged", func() bool {
		return strings.Contains(plain.Stderr(), "dropped a signal received while acquiring")
	})
	plain.Cmd.Process.Signal(syscall.SIGTERM)
	if code := plain.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("plain server: exit %d, want 143 (sleep survived the dropped SIGHUP, then SIGTERM)", code)
	}
}

// sigPending reports whether sig is pending for process pid (ShdPnd).
func sigPending(pid int, sig syscall.Signal) bool {
	return sigMask(pid, "ShdPnd:")&(1<<(uint(sig)-1)) != 0
}

// sigMask reads one of the signal masks of /proc/PID/status.
func sigMask(pid int, field string) uint64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field); ok {
			mask, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return mask
		}
	}
	return 0
}

// TestNothingLeftBehind: crashes of the wrapper (SIGKILL, the server killed
// after it) and one clean run leave nothing of dirlockd's outside the data
// directory: no file in $TMPDIR, no socket in the kernel's table.
func TestNothingLeftBehind(t *testing.T) {
	const crashes = 5
	dir := testutil.DataDir(t)
	tmp := t.TempDir()
	env := append(os.Environ(), "TMPDIR="+tmp)
	var crashed []int
	for i := range crashes {
		w := startRunEnv(t, env, dir, []string{"--ready-notify"}, "sh", "-c", `systemd-notify --ready; exec sleep 300`)
		r := waitHeld(t, dir, "ready", 10*time.Second)
		if !slices.ContainsFunc(unixSockets(t), func(s string) bool { return strings.HasPrefix(s, fmt.Sprintf("@dirlockd/notify/%d/", w.PID())) }) {
			t.Fatalf("crash %d: no abstract notify socket of PID %d in /proc/net/unix", i, w.PID())
		}
		w.Cmd.Process.Signal(syscall.SIGKILL)
		w.WaitExit(t, 10*time.Second)
		killWait(t, r.ChildPID)
		crashed = append(crashed, w.PID())
	}
	if code, _, stderr := dirlockdEnv(t, env, "run", "-D", dir, "--", "true"); code != 0 {
		t.Fatalf("clean run: exit %d\n%s", code, stderr)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) > 0 {
		t.Errorf("left in $TMPDIR after %d crashes and a clean run: %v", crashes, ents)
	}
	for _, s := range unixSockets(t) {
		for _, pid := range crashed {
			if strings.HasPrefix(s, fmt.Sprintf("@dirlockd/notify/%d/", pid)) {
				t.Errorf("socket of the crashed wrapper %d left: %s", pid, s)
			}
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("data directory holds more than the pidfile: %v", ents)
	}
}

// unixSockets lists the bound names in /proc/net/unix.
func unixSockets(t *testing.T) []string {
	var out []string
	for line := range strings.Lines(readFile(t, "/proc/net/unix")) {
		if f := strings.Fields(line); len(f) == 8 {
			out = append(out, f[7])
		}
	}
	return out
}
