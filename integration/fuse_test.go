package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/integration/fusefs"
	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/stress"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// Shared storage on one machine: the test FUSE filesystem serves one backing
// directory at two mount points, A and B, as an NFS server serves one export
// to two clients. Processes "on another host" run under onHost: their own
// hostname, PIDs and SysV IPC, the same files.

// mountHosts mounts a fresh backing directory twice in mode and returns the
// filesystem, the backing directory and the two views.
func mountHosts(t *testing.T, mode fusefs.Mode) (fs *fusefs.FS, backing, a, b string) {
	t.Helper()
	backing = testutil.DataDir(t)
	root := t.TempDir()
	a, b = filepath.Join(root, "a"), filepath.Join(root, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := fusefs.Mount(backing, mode, a, b)
	if err != nil {
		t.Fatalf("mount the test FUSE filesystem (%s): %v", mode, err)
	}
	t.Cleanup(func() {
		if err := fs.Close(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return fs, backing, a, b
}

// onHost is a command prefix that runs a command as if on another host
// named name: its own hostname (UTS namespace), PIDs (PID namespace with
// its own /proc) and SysV IPC. Killing the unshare process we start sends
// SIGTERM to the command, which is PID 1 of its namespace.
func onHost(name string) []string {
	return []string{"unshare", "--uts", "--ipc", "--pid", "--fork", "--kill-child=SIGTERM", "--mount-proc",
		"sh", "-c", `echo "$0" > /proc/sys/kernel/hostname && exec "$@"`, name}
}

// runOn runs "dirlockd ARGS" on host name to completion.
func runOn(t *testing.T, name string, args ...string) (int, string) {
	t.Helper()
	argv := append(append(onHost(name), bin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("%v: %v", argv, err)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// recordOf reads the pidfile's record in dir; given a FUSE mount's backing
// directory, as the storage server sees it.
func recordOf(t *testing.T, dir string) *pidfile.Record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, pidfile.DefaultName))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pidfile.Parse(b)
	if err != nil {
		t.Fatalf("pidfile in %s: %v\n%s", dir, err, b)
	}
	return r
}

// TestFUSEFallback: a filesystem that rejects flock (ENOSYS from its lock
// operation) makes Acquire fall back to OFD locks, which the filesystem
// keeps in its shared table: the two mounts still exclude each other.
// 20 rounds of claims, 3 of Acquire, and dirlockd run on both mounts.
func TestFUSEFallback(t *testing.T) {
	fs, _, a, b := mountHosts(t, fusefs.NoFlock)
	if st, err := pidfile.StatFS(a); err != nil || st.Kind() != "fuse" || !st.Shared() || st.Type != "fuse.dirlockdtest" || st.MountPoint != a {
		t.Errorf("StatFS(%s) = %+v, %v; want the FUSE mount", a, st, err)
	}
	// Every errno a FUSE filesystem may refuse flock with moves Auto on.
	for _, errno := range []syscall.Errno{syscall.EOPNOTSUPP, syscall.ENOLCK, syscall.ENOSYS} {
		fs.SetFlockErrno(errno)
		f, err := lockPidfile(a, pidfile.Options{})
		if err != nil {
			t.Fatalf("flock refused with %v: claim: %v", errno, err)
		}
		if f.Method() != pidfile.OFD {
			t.Errorf("flock refused with %v: Auto took %v, want ofd", errno, f.Method())
		}
		f.Close()
	}
	// FUSE sends RELEASE, which drops an OFD lock, after close(2) has
	// returned: a claim right after the other mount's close may find the
	// lock held for a moment.
	claim := func(dir string) *pidfile.File {
		var f *pidfile.File
		var err error
		testutil.Eventually(t, 5*time.Second, "a claim on "+dir+" after the other mount's close", func() bool {
			f, err = lockPidfile(dir, pidfile.Options{})
			return err == nil
		})
		return f
	}
	for i := range 20 {
		fa := claim(a)
		if fa.Method() != pidfile.OFD {
			t.Fatalf("round %d: Auto took %v on a filesystem without flock, want ofd", i, fa.Method())
		}
		for _, m := range []pidfile.Method{pidfile.Auto, pidfile.OFD, pidfile.POSIX} {
			if fb, err := lockPidfile(b, pidfile.Options{Method: m}); !errors.Is(err, pidfile.ErrLocked) {
				if fb != nil {
					fb.Close()
				}
				t.Fatalf("round %d: claim on B with %v while A holds: %v, want locked", i, m, err)
			}
		}
		if _, err := lockPidfile(b, pidfile.Options{Method: pidfile.Flock}); !errors.Is(err, pidfile.ErrUnsupported) {
			t.Fatalf("round %d: forced flock on B: %v, want unsupported", i, err)
		}
		fa.Close()
		claim(b).Close()
	}
	for i := range 3 {
		l, err := interlock.Acquire(context.Background(), a, interlock.Options{Wait: 5 * time.Second})
		if err != nil {
			t.Fatalf("round %d: Acquire on A: %v", i, err)
		}
		if m := l.Record().LockMethod; m != pidfile.OFD {
			t.Errorf("round %d: record says lock method %v, want ofd", i, m)
		}
		if _, err := interlock.Acquire(context.Background(), b, interlock.Options{}); !errors.Is(err, interlock.ErrHeld) {
			t.Fatalf("round %d: Acquire on B while A holds: %v, want held", i, err)
		}
		if err := l.Release(); err != nil {
			t.Fatal(err)
		}
	}

	w := startRun(t, nil, a, nil, "sleep", "60")
	testutil.Eventually(t, 10*time.Second, "the server on A", func() bool { return strings.Contains(w.Stderr(), "the server is ready") })
	if s := w.Stderr(); !strings.Contains(s, "lock_method=ofd") || !strings.Contains(s, "shared storage: FUSE") {
		t.Errorf("run on A does not log the OFD fallback and the FUSE guarantee:\n%s", s)
	}
	if code, _, stderr := dirlockd(t, "run", "-D", b, "--", "true"); code != exitcode.Held {
		t.Errorf("run on B while A runs: exit %d, want 75\n%s", code, stderr)
	}
	if code, out, _ := dirlockd(t, "check", "--json", "-D", b); code != 1 || !strings.Contains(out, `"filesystem":"fuse"`) {
		t.Errorf("check on B: exit %d, %s; want 1 (held), filesystem fuse", code, out)
	}
	w.Cmd.Process.Signal(syscall.SIGTERM)
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("run on A after SIGTERM: exit %d, want 143", code)
	}
}

// TestFUSEHeartbeatRule: with locks that stay on each host (as NFS mounted
// nolock), host beta finds the lock free although alpha runs. The record's
// heartbeat moves while beta watches, so beta refuses and says that the
// storage's locking is broken; once alpha is dead, its heartbeat stands
// still and beta takes over after the watch. 5 rounds of each.
func TestFUSEHeartbeatRule(t *testing.T) {
	_, backing, a, b := mountHosts(t, fusefs.LocalOnly)
	for i := range 5 {
		w := startRun(t, onHost("alpha"), a, []string{"--recheck", "100ms"}, "sleep", "60")
		testutil.Eventually(t, 10*time.Second, "a heartbeat from alpha", func() bool {
			b, _ := os.ReadFile(filepath.Join(backing, pidfile.DefaultName))
			r, err := pidfile.Parse(b)
			return err == nil && r.Hostname == "alpha" && r.Extra[testutil.RecordHeartbeat] != ""
		})
		before := recordOf(t, backing)
		start := time.Now()
		code, out := runOn(t, "beta", "run", "-D", b, "--recheck", "100ms", "--", "true")
		took := time.Since(start)
		if code != exitcode.Held || !strings.Contains(out, "LOCKING IS BROKEN") || !strings.Contains(out, "host alpha") {
			t.Fatalf("round %d: beta's run while alpha runs: exit %d, want 75 saying the locking is broken\n%s", i, code, out)
		}
		if after := recordOf(t, backing); after.Token != before.Token || after.Hostname != "alpha" {
			t.Fatalf("round %d: beta's refusal changed alpha's record: %+v", i, after)
		}
		t.Logf("round %d: beta refused after %v", i, took.Round(time.Millisecond))

		// alpha dies without a word: SIGKILL of its whole PID namespace
		// leaves the record "ready" with its last heartbeat.
		if pid1 := childOf(w.PID()); pid1 == w.PID() {
			t.Fatalf("round %d: unshare %d has no child", i, w.PID())
		} else if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
			t.Fatalf("kill alpha's PID 1 (%d, child of unshare %d): %v", pid1, w.PID(), err)
		}
		w.WaitExit(t, 10*time.Second)
		if r := recordOf(t, backing); r.Status == pidfile.Stopped {
			t.Fatalf("round %d: alpha's record says stopped after SIGKILL", i)
		}
		if code, out := runOn(t, "beta", "check", "--json", "-D", b); code != 0 || !strings.Contains(out, `"state":"stale"`) ||
			!strings.Contains(out, `"takeover_watch_s":0.3`) || !strings.Contains(out, "will first watch its heartbeat for 300ms") {
			t.Fatalf("round %d: beta's check after alpha died: exit %d\n%s", i, code, out)
		}
		start = time.Now()
		code, out = runOn(t, "beta", "run", "-D", b, "--recheck", "100ms", "--", "true")
		took = time.Since(start)
		if code != 0 || !strings.Contains(out, "took over from host alpha") {
			t.Fatalf("round %d: beta's run after alpha died: exit %d, want 0 and a takeover\n%s", i, code, out)
		}
		// --recheck 100ms on both sides: a watch of 300 ms.
		if took < 300*time.Millisecond {
			t.Fatalf("round %d: beta took over after %v, before the 300 ms watch ended", i, took)
		}
		t.Logf("round %d: beta took over in %v", i, took.Round(time.Millisecond))
	}
}

// TestFUSELockLoss: the storage loses its locks (an NFSv4 server whose lease
// for the client expired). The holder's next heartbeat fails with EIO, the
// recheck calls the interlock lost and stops the server. 5 rounds.
func TestFUSELockLoss(t *testing.T) {
	fs, _, a, b := mountHosts(t, fusefs.Shared)
	for i := range 5 {
		w := startRun(t, nil, a, []string{"--recheck", "100ms"}, "sh", "-c", `trap 'echo got-usr1' USR1; while :; do sleep 0.05; done`)
		testutil.Eventually(t, 10*time.Second, "the server on A", func() bool { return strings.Contains(w.Stderr(), "the server is ready") })
		if code, _, _ := dirlockd(t, "run", "-D", b, "--", "true"); code != exitcode.Held {
			t.Fatalf("round %d: run on B while A holds: exit %d, want 75", i, code)
		}
		if n := fs.LoseLocks(); n == 0 {
			t.Fatalf("round %d: LoseLocks dropped nothing while A held the directory", i)
		}
		lost := time.Now()
		code := w.WaitExit(t, 10*time.Second)
		s := w.Stderr()
		if code != exitcode.SignalBase+int(syscall.SIGTERM) || !strings.Contains(s, "interlock is lost") || !strings.Contains(s, "input/output error") {
			t.Fatalf("round %d: after the locks were lost: exit %d, want 143 after an EIO\n%s", i, code, s)
		}
		t.Logf("round %d: server stopped %v after the loss", i, time.Since(lost).Round(time.Millisecond))
		if code, _, stderr := dirlockd(t, "run", "-D", b, "--", "true"); code != 0 {
			t.Fatalf("round %d: run on B after A stopped: exit %d\n%s", i, code, stderr)
		}
	}
}

// stressHosts runs "dirlockd stress --json" on host alpha against dirA and
// on host beta against dirB at the same time, then "stress --verify" over the
// combined log, and returns the three reports and exit codes.
func stressHosts(t *testing.T, dirA, dirB string, args ...string) (codes [3]int, reps [3]stress.Report) {
	t.Helper()
	type result struct {
		code int
		out  string
	}
	results := make([]chan result, 2)
	for i, h := range []struct{ host, dir string }{{"alpha", dirA}, {"beta", dirB}} {
		results[i] = make(chan result, 1)
		argv := append(append(onHost(h.host), bin, "stress", "-D", h.dir, "--json", "--host-label", h.host), args...)
		go func() {
			cmd := exec.Command(argv[0], argv[1:]...)
			var out, errb strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &errb
			cmd.Run()
			results[i] <- result{cmd.ProcessState.ExitCode(), out.String() + errb.String()}
		}()
	}
	parse := func(i int, code int, out string) {
		codes[i] = code
		start := strings.Index(out, "{")
		if start < 0 || json.Unmarshal([]byte(out[start:strings.LastIndex(out, "}")+1]), &reps[i]) != nil {
			t.Fatalf("stress report %d (exit %d) is not JSON:\n%s", i, code, out)
		}
	}
	for i, ch := range results {
		r := <-ch
		parse(i, r.code, r.out)
	}
	code, out, stderr := dirlockd(t, "stress", "--verify", "--json", "-D", dirA)
	parse(2, code, out+stderr)
	return codes, reps
}

// logStress logs the reports of one round of stressHosts.
func logStress(t *testing.T, round int, codes [3]int, reps [3]stress.Report) {
	t.Helper()
	for h, r := range reps[:2] {
		t.Logf("round %d %s: exit %d, %d acquisitions (%.0f/s), wait p50 %v p99 %v max %v, %d killed; %s",
			round, r.Run.Host, codes[h], r.Run.Acquisitions, r.Run.Rate, r.Run.Wait.P50, r.Run.Wait.P99, r.Run.Wait.Max, r.Run.Killed, r.Verdict)
	}
	v := reps[2]
	t.Logf("round %d verify: exit %d, %d holds entered, %d completed, %d killed, %d violations", round, codes[2], v.Log.Entered, v.Log.Completed, v.Log.Killed, v.Log.ViolationCount)
}

// TestFUSEStress runs dirlockd stress from two hosts at once against the
// two mounts of one directory, 3 rounds per mode: with shared locks the
// witnesses find no violation; with host-local locks (NFS nolock) they
// must find violations, or the checker proves nothing.
//
// DIRLOCKD_FUSE_STRESS_ARGS replaces the stress flags, to measure: the
// figures in docs/nfs.md come from
// DIRLOCKD_FUSE_STRESS_ARGS="--workers 4 --duration 10s --hold 5ms".
func TestFUSEStress(t *testing.T) {
	const rounds = 3
	args := []string{"--workers", "3", "--duration", "2s", "--hold", "2ms", "--kill-rate", "0.05"}
	if env := os.Getenv("DIRLOCKD_FUSE_STRESS_ARGS"); env != "" {
		args = strings.Fields(env)
	}
	for _, mode := range []fusefs.Mode{fusefs.Shared, fusefs.NoFlock, fusefs.LocalOnly} {
		t.Run(mode.String(), func(t *testing.T) {
			_, _, a, b := mountHosts(t, mode)
			for i := range rounds {
				codes, reps := stressHosts(t, a, b, args...)
				logStress(t, i, codes, reps)
				v := reps[2]
				if len(v.Log.Hosts) != 2 {
					t.Fatalf("round %d: verify saw hosts %+v, want alpha and beta", i, v.Log.Hosts)
				}
				for _, h := range v.Log.Hosts {
					if h.Entered == 0 {
						t.Fatalf("round %d: host %s never held the directory", i, h.Host)
					}
				}
				if mode == fusefs.LocalOnly {
					if v.Log.ViolationCount == 0 || codes[2] != 1 || v.Verdict != "fail" {
						t.Fatalf("round %d: with host-local locks, verify found %d violations (exit %d, %s): the checker missed two holders", i, v.Log.ViolationCount, codes[2], v.Summary)
					}
					continue
				}
				// The verdict that counts is --verify's, over the whole log
				// once both hosts have finished. A run's own check at its
				// end reads a log the other host may still be writing.
				if codes[2] != 0 || v.Log.ViolationCount != 0 || v.Verdict != "pass" {
					t.Fatalf("round %d: with shared locks, verify found %d violations (exit %d): %s\n%+v", i, v.Log.ViolationCount, codes[2], v.Summary, v.Log.Violations)
				}
				for h, r := range reps[:2] {
					if codes[h] != 0 {
						t.Logf("round %d: %s's own end-of-run check said %s although --verify of the same log passed: %+v; notes %q",
							i, r.Run.Host, r.Summary, r.Log.Violations, r.Log.Notes)
					}
				}
			}
		})
	}
}

// TestFUSEStall: the storage stops answering writes (a hard NFS mount whose
// server is unreachable). The heartbeat write blocks, and dirlockd run with
// it; its watchdog stops the server once the recheck has not returned for
// 5 s (twice --recheck, at least 5 s), before the storage answers again.
// 2 rounds.
func TestFUSEStall(t *testing.T) {
	fs, backing, a, _ := mountHosts(t, fusefs.Shared)
	for i := range 2 {
		w := startRun(t, nil, a, []string{"--recheck", "100ms"}, "sh", "-c", `trap 'echo got-usr1' USR1; while :; do sleep 0.05; done`)
		testutil.Eventually(t, 10*time.Second, "a heartbeat of this round's wrapper", func() bool {
			b, _ := os.ReadFile(filepath.Join(backing, pidfile.DefaultName))
			r, err := pidfile.Parse(b)
			return err == nil && r.PID == w.PID() && r.Extra[testutil.RecordHeartbeat] != ""
		})
		child := 0
		if _, err := fmt.Sscan(recordOf(t, backing).Extra[testutil.RecordChildPID], &child); err != nil || child <= 0 {
			t.Fatalf("round %d: no child_pid in the record", i)
		}
		resume := fs.Stall()
		stalled := time.Now()
		// The supervisor must not wait for the storage: a signal still
		// reaches the server at once, long before the stall limit.
		testutil.Eventually(t, 20*time.Second, "a write blocked on the stalled storage", func() bool { return fs.Stalled() > 0 })
		w.Cmd.Process.Signal(syscall.SIGUSR1)
		testutil.Eventually(t, 2*time.Second, "SIGUSR1 to reach the server during the stall", func() bool { return strings.Contains(w.Stdout(), "got-usr1") })
		if d := time.Since(stalled); d > 4*time.Second {
			t.Fatalf("round %d: SIGUSR1 took until %v into the stall", i, d)
		}
		testutil.Eventually(t, 20*time.Second, "the server's death", func() bool { return !testutil.Alive(child) })
		took := time.Since(stalled)
		select {
		case <-w.Done():
			t.Fatalf("round %d: dirlockd run exited while its heartbeat write was blocked", i)
		default:
		}
		resume()
		code := w.WaitExit(t, 10*time.Second)
		s := w.Stderr()
		if took < 5*time.Second || code != exitcode.SignalBase+int(syscall.SIGTERM) || !strings.Contains(s, "the storage has not answered for 5s") {
			t.Fatalf("round %d: server stopped %v after the stall, run exit %d; want 5 s or more, 143 and the watchdog's message\n%s", i, took, code, s)
		}
		t.Logf("round %d: server stopped %v after the storage stalled", i, took.Round(time.Millisecond))
	}
}

// lockPidfile opens the pidfile of dir and takes its lock, as a starter
// does before it reads the old record.
func lockPidfile(dir string, opts pidfile.Options) (*pidfile.File, error) {
	f, err := pidfile.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	if err := f.TryLock(opts.Method); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
