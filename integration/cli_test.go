package integration

// What the tests of the inspection and control commands share (check_test.go,
// stop_test.go, wait_test.go, help_test.go): check, status, stop and
// wait, against free, held, stale, orphaned and invalid data directories.
// Every process signalled here was started by the test, directly or through
// the dirlockd run it started (its server, found through check --json and
// pinned with a pidfd while it is provably the wrapper's child).

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// cliEnv runs the binary with the test's environment minus
// DIRLOCKD_DATADIR, plus extra.
func cliEnv(t *testing.T, extra []string, args ...string) (int, string, string) {
	t.Helper()
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "DIRLOCKD_DATADIR=") })
	return dirlockdEnv(t, append(env, extra...), args...)
}

type cliResult struct {
	code        int
	out, stderr string
}

// cliConcurrently runs the binary once per argument list, all at the same
// time, and returns their results in order.
func cliConcurrently(t *testing.T, argss ...[]string) []cliResult {
	t.Helper()
	res := make([]cliResult, len(argss))
	cmds := make([]*exec.Cmd, len(argss))
	outs := make([][2]bytes.Buffer, len(argss))
	for i, args := range argss {
		cmds[i] = exec.Command(bin, args...)
		cmds[i].Stdout, cmds[i].Stderr = &outs[i][0], &outs[i][1]
		if err := cmds[i].Start(); err != nil {
			t.Fatalf("dirlockd %v: %v", args, err)
		}
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			if _, ok := err.(*exec.ExitError); !ok {
				t.Fatalf("dirlockd %v: %v", argss[i], err)
			}
		}
		res[i] = cliResult{cmd.ProcessState.ExitCode(), outs[i][0].String(), outs[i][1].String()}
	}
	return res
}

// cliStat returns the state letter and parent PID of pid from /proc.
func cliStat(pid int) (state byte, ppid int, ok bool) {
	st, err := proc.ReadStat(pid)
	return st.State, st.PPID, err == nil
}

// cliPinned is a process the test started indirectly (a server of a dirlockd
// run), pinned by a pidfd so that neither the test nor its cleanup can
// signal a recycled PID.
type cliPinned struct {
	pid, fd int
}

// cliPin pins pid, which must be a child of parent (a process the test
// started), and SIGKILLs it when the test ends if it still lives.
func cliPin(t *testing.T, pid, parent int) *cliPinned {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	if _, ppid, ok := cliStat(pid); !ok || ppid != parent {
		unix.Close(fd)
		t.Fatalf("PID %d is not a child of %d (parent %d): refusing to track it", pid, parent, ppid)
	}
	p := &cliPinned{pid: pid, fd: fd}
	t.Cleanup(func() {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		for deadline := time.Now().Add(5 * time.Second); p.alive() && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		unix.Close(fd)
	})
	return p
}

func (p *cliPinned) alive() bool {
	if unix.PidfdSendSignal(p.fd, 0, nil, 0) != nil {
		return false
	}
	st, _, ok := cliStat(p.pid)
	return ok && st != 'Z'
}

func (p *cliPinned) kill(t *testing.T) {
	t.Helper()
	unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0)
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("PID %d to die", p.pid), func() bool { return !p.alive() })
}

// cliDataDir makes a data directory. If the test fails, possibly with a
// holder SIGKILLed by the cleanups, the directory is reclaimed after every
// process of the test is gone, so that a failure does not also leak a
// segment.
func cliDataDir(t *testing.T) string {
	t.Helper()
	dir := testutil.DataDir(t)
	t.Cleanup(func() {
		if t.Failed() {
			exec.Command(bin, "run", "-D", dir, "--", "true").Run()
		}
	})
	return dir
}

// cliHeld starts "dirlockd run -D dir flags -- argv" and waits until it is
// held with status ready. It returns the wrapper, its check report and its
// server, pinned.
func cliHeld(t *testing.T, dir string, flags []string, argv ...string) (*testutil.Proc, testutil.Report, *cliPinned) {
	t.Helper()
	w := startRun(t, nil, dir, flags, argv...)
	r := waitHeld(t, dir, "", 10*time.Second)
	if r.PID != w.PID() {
		t.Fatalf("check names PID %d, want the wrapper %d", r.PID, w.PID())
	}
	server := cliPin(t, r.ChildPID, w.PID())
	return w, waitHeld(t, dir, "ready", 10*time.Second), server
}

// cliKillWrapper SIGKILLs the wrapper (the process the test started) and
// reaps it.
func cliKillWrapper(t *testing.T, w *testutil.Proc) {
	t.Helper()
	w.Cmd.Process.Signal(syscall.SIGKILL)
	if code := w.WaitExit(t, 10*time.Second); code != -1 {
		t.Fatalf("SIGKILLed wrapper: exit %d, want -1 (killed)", code)
	}
}

// cliReclaim starts and stops a server in dir once, which takes over a stale
// record and removes the dead holder's segment, and checks that the
// directory ends free.
func cliReclaim(t *testing.T, dir string) string {
	t.Helper()
	code, _, stderr := dirlockd(t, "run", "-D", dir, "--", "true")
	if code != 0 {
		t.Fatalf("reclaiming run: exit %d; %s", code, stderr)
	}
	if code, r := check(t, dir); code != 0 || r.State != "free" {
		t.Fatalf("check after the reclaiming run: exit %d, %+v", code, r)
	}
	return stderr
}

func cliHasSegment(t *testing.T, id int) bool {
	t.Helper()
	ids, err := testutil.Segments()
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(ids, id)
}
