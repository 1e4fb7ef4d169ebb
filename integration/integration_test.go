// Package integration drives the dirlockd binary as users do: real
// processes, real signals, real namespaces, real servers.
package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/integration/torture"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// bin is dirlockd as shipped; binFault is built with -tags faultinject,
// for the crash-injection scenarios of the torture suite.
var bin, binFault string

func TestMain(m *testing.M) {
	helpers := map[string]testutil.Helper{"torture-worker": torture.WorkerMain,
		"hostile-segments": hostileSegments, "hostile-exchange": hostileExchange,
		"notify-flood": notifyFlood, "sethostname-exec": setHostnameExec}
	testutil.Dispatch(helpers)
	dir, err := os.MkdirTemp("", "dirlockd-bin")
	if err != nil {
		panic(err)
	}
	bin, binFault = filepath.Join(dir, "dirlockd"), filepath.Join(dir, "dirlockd-faultinject")
	// The etcd agent goes beside them, where dirlockd looks for it.
	for _, b := range [][]string{{"-o", bin, "../cmd/dirlockd"}, {"-tags", "faultinject", "-o", binFault, "../cmd/dirlockd"},
		{"-o", filepath.Join(dir, "dirlockd-etcd"), "../cmd/dirlockd-etcd"}} {
		build := exec.Command("go", append([]string{"build"}, b...)...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build dirlockd:", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	// Every temporary directory of the tests, and any scratch of the
	// processes they start, goes under dir, which goes when the tests end.
	os.Setenv("TMPDIR", dir)
	code := testutil.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// dirlockd runs the binary to completion and returns its exit code and output.
func dirlockd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return dirlockdEnv(t, nil, args...)
}

// dirlockdEnv is dirlockd with env as the whole environment (nil: ours).
func dirlockdEnv(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("dirlockd %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// check runs "dirlockd check --json -D dir".
func check(t *testing.T, dir string) (int, testutil.Report) {
	t.Helper()
	code, out, stderr := dirlockd(t, "check", "--json", "-D", dir)
	var r testutil.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("check --json: %q (%v); stderr %s", out, err, stderr)
	}
	return code, r
}

// eventually polls cond until it holds or the timeout passes.
// startRun starts "[prefix...] dirlockd run -D dir flags... -- argv..." and
// kills it (by the PID we started) when the test ends.
func startRun(t *testing.T, prefix []string, dir string, flags []string, argv ...string) *testutil.Proc {
	t.Helper()
	args := append(append(append(append([]string{}, prefix...), bin, "run", "-D", dir), flags...), "--")
	return startWrapper(t, nil, append(args, argv...))
}

// startRunEnv is startRun with the environment env.
func startRunEnv(t *testing.T, env []string, dir string, flags []string, argv ...string) *testutil.Proc {
	t.Helper()
	args := append(append([]string{bin, "run", "-D", dir}, flags...), "--")
	return startWrapper(t, env, append(args, argv...))
}

// startWrapper starts args, a "dirlockd run" (or a command that execs
// one), with the environment env, its stdout (the server's and
// dirlockd's) and stderr (dirlockd's logs and the server's) in files.
func startWrapper(t *testing.T, env, args []string) *testutil.Proc {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	w := testutil.StartLogged(t, cmd)
	killTreeAtEnd(t, w)
	return w
}

// killTreeAtEnd kills, when the test ends, the server's tree under the
// wrapper w before w itself: with the wrapper gone, its daemonized
// processes would be reparented out of reach.
func killTreeAtEnd(t *testing.T, w *testutil.Proc) {
	t.Cleanup(func() {
		for _, pid := range testutil.Descendants(w.PID()) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// waitHeld waits until check reports the directory held with status want
// ("" for any) and returns the report.
func waitHeld(t *testing.T, dir, want string, timeout time.Duration) testutil.Report {
	t.Helper()
	var r testutil.Report
	testutil.Eventually(t, timeout, "the directory held with status "+want, func() bool {
		_, r = check(t, dir)
		return r.State == "held" && (want == "" || r.Status == want) && r.ChildPID > 0
	})
	return r
}

// waitOpened waits until the wrapper w has opened a pidfile (in dir, if not
// empty): it has set up its signal handling by then, and is acquiring.
func waitOpened(t *testing.T, w *testutil.Proc, dir string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "the wrapper to open the pidfile", func() bool {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", w.PID()))
		for _, fd := range fds {
			if l, err := os.Readlink(fd); err == nil && filepath.Base(l) == pidfile.DefaultName && (dir == "" || filepath.Dir(l) == dir) {
				return true
			}
		}
		return false
	})
}

// killWait SIGKILLs pid (a process our test started, directly or through
// dirlockd) and waits until it is dead.
func killWait(t *testing.T, pid int) {
	t.Helper()
	if !testutil.KillPID(pid) {
		t.Fatalf("PID %d still alive 10s after SIGKILL", pid)
	}
}

// childOf returns the first child of pid (the process unshare --fork
// started), or pid itself when it has none.
func childOf(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if f := strings.Fields(string(b)); len(f) > 0 {
		if c, err := strconv.Atoi(f[0]); err == nil {
			return c
		}
	}
	return pid
}

// nsInit returns the PID of the dirlockd that w (unshare --fork) runs as
// PID 1 of its namespaces, once unshare's child has become it: before its
// exec the child is a shell, which as a namespace's init is immune to the
// SIGTERM a test would send it.
func nsInit(t *testing.T, w *testutil.Proc) int {
	t.Helper()
	var pid int
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("dirlockd as PID 1 of unshare %d's namespace", w.PID()), func() bool {
		pid = childOf(w.PID())
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		return pid != w.PID() && string(comm) == "dirlockd\n"
	})
	return pid
}

func TestRunConflictCheckStop(t *testing.T) {
	dir := testutil.DataDir(t)
	w := startRun(t, nil, dir, nil, "sleep", "300")
	r := waitHeld(t, dir, "ready", 10*time.Second)
	if r.PID != w.PID() {
		t.Errorf("check names PID %d, want the wrapper %d", r.PID, w.PID())
	}
	code, _, stderr := dirlockd(t, "run", "-D", dir, "--", "true")
	if code != exitcode.Held || !strings.Contains(stderr, fmt.Sprintf("held by PID %d", w.PID())) {
		t.Errorf("second run: exit %d, stderr %q; want 75 naming PID %d", code, stderr, w.PID())
	}
	code, _, _ = dirlockd(t, "run", "-D", dir, "--conflict-exit-code", "9", "--", "true")
	if code != 9 {
		t.Errorf("second run with --conflict-exit-code 9: exit %d", code)
	}
	if code, _ := check(t, dir); code != 1 {
		t.Errorf("check while held: exit %d, want 1", code)
	}
	code, _, stderr = dirlockd(t, "stop", "-D", dir, "--timeout", "10s")
	if code != 0 {
		t.Fatalf("stop: exit %d; %s", code, stderr)
	}
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("wrapper exit %d after stop, want 143 (sleep killed by SIGTERM)", code)
	}
	if code, r := check(t, dir); code != 0 || r.State != "free" {
		t.Errorf("check after stop: exit %d, %+v", code, r)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "dirlockd.pid"))
	if first, _, _ := strings.Cut(string(b), "\n"); first != fmt.Sprint(w.PID()) || !strings.Contains(string(b), "status=stopped") {
		t.Errorf("pidfile after release:\n%s", b)
	}
}

// TestNamespaceTwins: holders in other PID and IPC namespaces cannot be seen
// by PID or by segment; the file lock still excludes them. This is the case
// PostgreSQL's interlock misses.
func TestNamespaceTwins(t *testing.T) {
	for _, c := range []struct {
		name   string
		prefix []string
	}{
		{"pid", []string{"unshare", "--pid", "--fork", "--kill-child", "--mount-proc"}},
		{"ipc", []string{"unshare", "--ipc"}},
		{"pid+ipc", []string{"unshare", "--pid", "--ipc", "--fork", "--kill-child", "--mount-proc"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			// Inside the namespace first, contender on the host.
			w := startRun(t, c.prefix, dir, nil, "sleep", "300")
			testutil.Eventually(t, 10*time.Second, "the namespaced holder", func() bool {
				return strings.Contains(w.Stderr(), "the server is ready")
			})
			if code, _, stderr := dirlockd(t, "run", "-D", dir, "--", "true"); code != exitcode.Held {
				t.Errorf("host contender against a %s-namespace holder: exit %d, %s", c.name, code, stderr)
			}
			syscall.Kill(childOf(w.PID()), syscall.SIGTERM)
			w.WaitExit(t, 10*time.Second)
			// Holder on the host, contender inside the namespace.
			h := startRun(t, nil, dir, nil, "sleep", "300")
			waitHeld(t, dir, "ready", 10*time.Second)
			args := append(append([]string{}, c.prefix[1:]...), bin, "run", "-D", dir, "--", "true")
			cmd := exec.Command(c.prefix[0], args...)
			out, err := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != exitcode.Held {
				t.Errorf("%s-namespace contender against a host holder: exit %d (%v), %s", c.name, code, err, out)
			}
			syscall.Kill(h.PID(), syscall.SIGTERM)
			h.WaitExit(t, 10*time.Second)
		})
	}
}
