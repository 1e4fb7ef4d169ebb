package integration

// Tests of the inspection and control commands: check, status, stop and
// wait, against free, held, stale, orphaned and invalid data directories.
// Every process signalled here was started by the test, directly or through
// the dirlockd run it started (its server, found through check --json and
// pinned with a pidfd while it is provably the wrapper's child).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
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
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, err == nil
}

// cliAlive says whether pid exists and is not a zombie.
func cliAlive(pid int) bool {
	st, _, ok := cliStat(pid)
	return ok && st != 'Z' && syscall.Kill(pid, 0) == nil
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
	eventually(t, 10*time.Second, fmt.Sprintf("PID %d to die", p.pid), func() bool { return !p.alive() })
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

func TestCheckStatusFreshDir(t *testing.T) {
	dir := cliDataDir(t)
	code, r := check(t, dir)
	if code != 0 || r.State != "free" || !strings.Contains(r.Reason, "no pidfile") || r.Datadir != dir {
		t.Errorf("check --json on a fresh dir: exit %d, %+v; want 0, free, reason mentioning no pidfile", code, r)
	}
	if r.Orphans == nil || len(r.Orphans) != 0 || r.PID != 0 {
		t.Errorf("check --json on a fresh dir: orphans %v (want []), pid %d (want none)", r.Orphans, r.PID)
	}
	code, out, _ := dirlockd(t, "check", "-D", dir)
	if want := "free: " + dir + " is free (no pidfile yet)\n"; code != 0 || out != want {
		t.Errorf("check on a fresh dir: exit %d, %q; want 0, %q", code, out, want)
	}
	code, out, _ = dirlockd(t, "status", "-D", dir)
	if code != 3 || !strings.HasPrefix(out, "free: ") || !strings.Contains(out, "no pidfile") {
		t.Errorf("status on a never-started dir: exit %d, %q; want LSB 3 (not running), free", code, out)
	}
	code, out, _ = dirlockd(t, "status", "-D", dir, "--json")
	var s testutil.Report
	if err := json.Unmarshal([]byte(out), &s); err != nil || code != 3 || s.State != "free" || s.ShmID != nil {
		t.Errorf("status --json on a never-started dir: exit %d, %q (%v); want 3, state free, no shm_id", code, out, err)
	}
	if _, err := os.Stat(filepath.Join(dir, pidfile.DefaultName)); err == nil {
		t.Errorf("check or status created the pidfile")
	}
}

func TestCheckStatusHeldThenStale(t *testing.T) {
	dir := cliDataDir(t)
	w, _, child := cliHeld(t, dir, nil, "sleep", "300")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}

	// Held.
	code, r := check(t, dir)
	if code != 1 || r.State != "held" || r.PID != w.PID() || r.ChildPID != child.pid || r.Status != "ready" || r.Host != host {
		t.Errorf("check --json while held: exit %d, %+v; want 1, held, pid %d, child_pid %d, status ready, host %s",
			code, r, w.PID(), child.pid, host)
	}
	if !strings.Contains(r.Reason, fmt.Sprintf("held by PID %d on host %s", w.PID(), host)) {
		t.Errorf("check --json while held: reason %q does not name the holder", r.Reason)
	}
	code, out, _ := dirlockd(t, "check", "-D", dir)
	if code != 1 || !strings.HasPrefix(out, "held: ") || !strings.Contains(out, fmt.Sprintf("held by PID %d", w.PID())) {
		t.Errorf("check while held: exit %d, %q", code, out)
	}
	code, out, _ = dirlockd(t, "status", "-D", dir)
	for _, want := range []string{
		"running: " + dir + "\n",
		fmt.Sprintf("  pid %d, main pid %d, host %s\n", w.PID(), child.pid, host),
		"  status ready, up ",
		"  lock flock, shm key 0x",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status while held: output lacks %q:\n%s", want, out)
		}
	}
	if code != 0 {
		t.Errorf("status while held: exit %d, want LSB 0 (running)", code)
	}
	code, out, _ = dirlockd(t, "status", "-D", dir, "--json")
	var s testutil.Report
	if err := json.Unmarshal([]byte(out), &s); err != nil || code != 0 || s.State != "held" || s.ShmID == nil || !strings.HasPrefix(s.ShmKey, "0x") {
		t.Fatalf("status --json while held: exit %d, %q (%v); want 0, held, a segment", code, out, err)
	}
	if !cliHasSegment(t, *s.ShmID) {
		t.Fatalf("status names segment %d, which ipcs does not list", *s.ShmID)
	}

	// Wrapper and server SIGKILLed: nobody survives, the record says ready.
	cliKillWrapper(t, w)
	child.kill(t)
	code, r = check(t, dir)
	if code != 0 || r.State != "stale" || !strings.Contains(r.Reason, "did not shut down cleanly") ||
		!strings.Contains(r.Reason, fmt.Sprintf("previous holder PID %d ", w.PID())) || len(r.Orphans) != 0 {
		t.Errorf("check --json after wrapper and server were killed: exit %d, %+v; want 0, stale, naming PID %d", code, r, w.PID())
	}
	code, out, _ = dirlockd(t, "status", "-D", dir)
	if code != 1 || !strings.HasPrefix(out, "stale: ") || !strings.Contains(out, "did not shut down cleanly") {
		t.Errorf("status on a stale record: exit %d, %q; want LSB 1 (dead with pidfile)", code, out)
	}
	if code, _, stderr := dirlockd(t, "wait", "-D", dir, "--for", "free", "--timeout", "2s"); code != 0 {
		t.Errorf("wait --for free on a stale record: exit %d, %q; want 0 (stale counts as free)", code, stderr)
	}
	if !cliHasSegment(t, *s.ShmID) {
		t.Errorf("the dead holder's segment %d vanished before any takeover", *s.ShmID)
	}

	// The next start takes over and removes the dead holder's segment.
	stderr := cliReclaim(t, dir)
	if !strings.Contains(stderr, fmt.Sprintf("previous holder PID %d", w.PID())) || !strings.Contains(stderr, "did not shut down cleanly") {
		t.Errorf("reclaiming run did not report the unclean predecessor:\n%s", stderr)
	}
	if cliHasSegment(t, *s.ShmID) {
		t.Errorf("the dead holder's segment %d survived the takeover", *s.ShmID)
	}
	code, r = check(t, dir)
	if code != 0 || r.State != "free" || strings.Contains(r.Reason, "no pidfile") {
		t.Errorf("check after a clean run: exit %d, %+v", code, r)
	}
	code, out, _ = dirlockd(t, "status", "-D", dir)
	if code != 3 || !strings.HasPrefix(out, "free: ") {
		t.Errorf("status after a clean stop: exit %d, %q; want LSB 3", code, out)
	}
}

// TestCheckStatusStopOrphans: the wrapper is SIGKILLed while its server,
// which inherited the locked descriptor, lives on. Every inspection of an
// orphaned lock waits the settle time (2 s), so the commands run
// concurrently.
func TestCheckStatusStopOrphans(t *testing.T) {
	dir := cliDataDir(t)
	w, _, child := cliHeld(t, dir, nil, "sleep", "300")
	cliKillWrapper(t, w)
	if !child.alive() {
		t.Fatalf("the server %d died with the wrapper", child.pid)
	}
	// Run concurrently: -parallel (GOMAXPROCS) may be as low as 1 or 2.
	res := cliConcurrently(t,
		[]string{"check", "--json", "-D", dir},
		[]string{"check", "-D", dir},
		[]string{"status", "-D", dir},
		[]string{"stop", "-D", dir, "--timeout", "5s"},
		[]string{"wait", "-D", dir, "--for", "free", "--timeout", "1s"})

	var r testutil.Report
	if err := json.Unmarshal([]byte(res[0].out), &r); err != nil {
		t.Errorf("check --json: %q: %v", res[0].out, err)
	}
	if code := res[0].code; code != 2 || r.State != "orphans" || !slices.Equal(r.Orphans, []int{child.pid}) || r.PID != w.PID() {
		t.Errorf("check --json: exit %d, %+v; want 2, orphans [%d], pid %d", code, r, child.pid, w.PID())
	}
	if code, out := res[1].code, res[1].out; code != 2 || !strings.HasPrefix(out, "orphans: ") ||
		!strings.Contains(out, fmt.Sprintf("PID %d (sleep 300) holds the pidfile lock", child.pid)) ||
		!strings.Contains(out, fmt.Sprintf("kill %d", child.pid)) {
		t.Errorf("check: exit %d, %q; want 2 naming orphan PID %d", code, out, child.pid)
	}
	if code, out := res[2].code, res[2].out; code != 1 || !strings.HasPrefix(out, "orphans: ") || !strings.Contains(out, fmt.Sprintf("PID %d", child.pid)) {
		t.Errorf("status: exit %d, %q; want LSB 1", code, out)
	}
	if code, stderr := res[3].code, res[3].stderr; code != 1 || !strings.Contains(stderr, "refusing to signal processes it did not record") ||
		!strings.Contains(stderr, fmt.Sprintf("PID %d", child.pid)) {
		t.Errorf("stop against orphans: exit %d, stderr %q; want 1, refusing", code, stderr)
	}
	if code, stderr := res[4].code, res[4].stderr; code != 1 || !strings.Contains(stderr, "timed out") || !strings.Contains(stderr, "state=orphans") {
		t.Errorf("wait --for free against orphans: exit %d, stderr %q; want 1, timed out in state orphans", code, stderr)
	}
	if !child.alive() {
		t.Errorf("the orphan %d died: something signalled it", child.pid)
	}
	child.kill(t)
	stderr := cliReclaim(t, dir)
	if !strings.Contains(stderr, "did not shut down cleanly") {
		t.Errorf("reclaiming run after the orphan died:\n%s", stderr)
	}
}

func TestCheckStatusStopWaitInvalidDir(t *testing.T) {
	dir := cliDataDir(t)
	if err := os.Chmod(dir, 0o770); err != nil {
		t.Fatal(err)
	}
	code, r := check(t, dir)
	if code != 3 || r.State != "invalid" || !strings.Contains(r.Reason, "group- or world-writable") ||
		!strings.Contains(r.Reason, "chmod go-w "+dir) {
		t.Errorf("check --json on a 0770 dir: exit %d, %+v; want 3, invalid, chmod go-w", code, r)
	}
	code, out, _ := dirlockd(t, "check", "-D", dir)
	if code != 3 || !strings.HasPrefix(out, "invalid: ") || !strings.Contains(out, "(chmod go-w "+dir+")") {
		t.Errorf("check on a 0770 dir: exit %d, %q", code, out)
	}
	code, out, _ = dirlockd(t, "status", "-D", dir)
	if code != 4 || !strings.HasPrefix(out, "invalid: ") || !strings.Contains(out, "chmod go-w") {
		t.Errorf("status on a 0770 dir: exit %d, %q; want LSB 4 (unknown)", code, out)
	}
	code, _, stderr := dirlockd(t, "stop", "-D", dir)
	if code != 3 || !strings.Contains(stderr, "cannot inspect the data directory") || !strings.Contains(stderr, "chmod go-w") {
		t.Errorf("stop on a 0770 dir: exit %d, %q; want 3", code, stderr)
	}
	code, _, stderr = dirlockd(t, "wait", "-D", dir, "--timeout", "5s")
	if code != 3 || !strings.Contains(stderr, "cannot inspect the data directory") || !strings.Contains(stderr, "chmod go-w") {
		t.Errorf("wait on a 0770 dir: exit %d, %q; want 3", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, pidfile.DefaultName)); err == nil {
		t.Errorf("a command created a pidfile in the invalid directory")
	}
}

// TestEmptyPidfile: an empty pidfile with the lock free is what a start
// that died before writing its first record leaves: stale, not free, for
// every command, and the next run starts and reports it.
func TestEmptyPidfile(t *testing.T) {
	dir := cliDataDir(t)
	path := filepath.Join(dir, pidfile.DefaultName)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, r := check(t, dir)
	if code != 0 || r.State != "stale" || r.PID != 0 || len(r.Orphans) != 0 ||
		!strings.Contains(r.Reason, path+": malformed pidfile record: empty") || !strings.Contains(r.Reason, "left no survivors") {
		t.Errorf("check --json on an empty pidfile: exit %d, %+v; want 0, stale, naming the empty pidfile", code, r)
	}
	code, out, _ := dirlockd(t, "check", "-D", dir)
	if code != 0 || !strings.HasPrefix(out, "stale: "+dir+" is free: ") {
		t.Errorf("check on an empty pidfile: exit %d, %q; want 0, stale", code, out)
	}
	code, out, _ = dirlockd(t, "status", "-D", dir)
	if code != 1 || !strings.HasPrefix(out, "stale: ") {
		t.Errorf("status on an empty pidfile: exit %d, %q; want LSB 1 (dead with pidfile), stale", code, out)
	}
	if code, _, stderr := dirlockd(t, "stop", "-D", dir); code != 0 || !strings.Contains(stderr, "nothing signalled") {
		t.Errorf("stop on an empty pidfile: exit %d, %q; want 0, nothing signalled", code, stderr)
	}
	if code, _, stderr := dirlockd(t, "wait", "-D", dir, "--for", "free", "--timeout", "2s"); code != 0 {
		t.Errorf("wait --for free on an empty pidfile: exit %d, %q; want 0 (stale counts as free)", code, stderr)
	}
	if b, err := os.ReadFile(path); err != nil || len(b) != 0 {
		t.Errorf("an inspection changed the empty pidfile: %q, %v", b, err)
	}
	code, _, stderr := dirlockd(t, "run", "-D", dir, "--", "true")
	if code != 0 || !strings.Contains(stderr, "level=WARN") || !strings.Contains(stderr, "empty: a start died before writing its record") {
		t.Errorf("run on an empty pidfile: exit %d, %q; want 0 and a warning about the empty pidfile", code, stderr)
	}
	if code, r := check(t, dir); code != 0 || r.State != "free" {
		t.Errorf("check after a clean run: exit %d, %+v; want free", code, r)
	}
}

func TestCheckSeveralDirs(t *testing.T) {
	free, held, invalid := cliDataDir(t), cliDataDir(t), cliDataDir(t)
	if err := os.Chmod(invalid, 0o770); err != nil {
		t.Fatal(err)
	}
	w, _, child := cliHeld(t, held, nil, "sleep", "300")

	code, out, _ := dirlockd(t, "check", "-D", free, "-D", held, "-D", invalid)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 3 || len(lines) != 3 {
		t.Fatalf("check of free, held, invalid: exit %d, %q; want 3 and three lines", code, out)
	}
	for i, want := range []string{
		"free: " + free + " is free (no pidfile yet)",
		"held: " + held + " is in use: held by PID " + strconv.Itoa(w.PID()),
		"invalid: " + invalid + ": data directory is group- or world-writable",
	} {
		if !strings.HasPrefix(lines[i], want) {
			t.Errorf("check line %d: %q, want it to start with %q", i+1, lines[i], want)
		}
	}
	// The exit code is the worst, wherever it comes in the list.
	code, out, _ = dirlockd(t, "check", "-D", held, "-D", free)
	if code != 1 || !strings.HasPrefix(out, "held: ") || !strings.Contains(out, "\nfree: ") {
		t.Errorf("check of held, free: exit %d, %q; want 1", code, out)
	}

	code, out, _ = dirlockd(t, "check", "--json", "-D", free, "-D", held, "-D", invalid)
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 3 || len(lines) != 3 {
		t.Fatalf("check --json of free, held, invalid: exit %d, %q; want 3 and three lines", code, out)
	}
	want := []testutil.Report{
		{Datadir: free, State: "free"},
		{Datadir: held, State: "held", PID: w.PID(), ChildPID: child.pid, Status: "ready"},
		{Datadir: invalid, State: "invalid"},
	}
	for i, line := range lines {
		var r testutil.Report
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("check --json line %d: %q: %v", i+1, line, err)
		}
		if r.Datadir != want[i].Datadir || r.State != want[i].State || r.PID != want[i].PID ||
			r.ChildPID != want[i].ChildPID || r.Status != want[i].Status || r.Reason == "" || r.Orphans == nil {
			t.Errorf("check --json line %d: %+v, want %+v with a reason and orphans []", i+1, r, want[i])
		}
	}

	// DIRLOCKD_DATADIR stands in for -D.
	code, out, stderr := cliEnv(t, []string{"DIRLOCKD_DATADIR=" + held}, "check", "--json")
	var r testutil.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 1 || r.Datadir != held || r.PID != w.PID() {
		t.Errorf("check --json with DIRLOCKD_DATADIR=%s: exit %d, %q %q (%v); want 1 naming PID %d", held, code, out, stderr, err, w.PID())
	}
	code, out, _ = cliEnv(t, []string{"DIRLOCKD_DATADIR=" + held}, "status")
	if code != 0 || !strings.HasPrefix(out, "running: "+held+"\n") {
		t.Errorf("status with DIRLOCKD_DATADIR: exit %d, %q", code, out)
	}
	// -D wins over the environment.
	code, out, _ = cliEnv(t, []string{"DIRLOCKD_DATADIR=" + held}, "check", "-D", free)
	if code != 0 || !strings.HasPrefix(out, "free: "+free) {
		t.Errorf("check -D free with DIRLOCKD_DATADIR=held: exit %d, %q", code, out)
	}

	code, _, stderr = dirlockd(t, "stop", "-D", held, "--timeout", "10s")
	if code != 0 {
		t.Fatalf("stop: exit %d; %s", code, stderr)
	}
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("wrapper exit %d after stop, want 143", code)
	}
}

func TestCheckUsage(t *testing.T) {
	dir := cliDataDir(t)
	code, out, stderr := cliEnv(t, nil, "check")
	if code != exitcode.Usage || out != "" || !strings.Contains(stderr, "no data directory: pass -D DIR or set DIRLOCKD_DATADIR") {
		t.Errorf("check without -D or DIRLOCKD_DATADIR: exit %d, stdout %q, stderr %q; want 64", code, out, stderr)
	}
	code, out, stderr = cliEnv(t, nil, "check", "-D", dir, "--bogus")
	if code != exitcode.Usage || out != "" || !strings.Contains(stderr, "unknown flag: --bogus") || !strings.Contains(stderr, `Run "dirlockd check --help"`) {
		t.Errorf("check --bogus: exit %d, stdout %q, stderr %q; want 64", code, out, stderr)
	}
	code, out, stderr = cliEnv(t, nil, "check", "-D", dir, "extra")
	if code != exitcode.Usage || out != "" || !strings.Contains(stderr, `unexpected argument "extra"`) {
		t.Errorf("check with a positional argument: exit %d, stdout %q, stderr %q; want 64", code, out, stderr)
	}
	code, out, stderr = cliEnv(t, nil, "check", "--help")
	if code != 0 || stderr != "" || !strings.Contains(out, "dirlockd check -D /srv/a -D /srv/b --json") {
		t.Errorf("check --help: exit %d, stdout %q, stderr %q; want 0, its examples on stdout, nothing on stderr", code, out, stderr)
	}
	// status has no usage code of its own: LSB 4 (unknown).
	if code, _, stderr := cliEnv(t, nil, "status"); code != 4 || !strings.Contains(stderr, "no data directory") {
		t.Errorf("status without -D: exit %d, %q; want LSB 4", code, stderr)
	}
}

// TestHelp: help goes to standard output, with exit 0 and nothing on
// standard error (docs/cli.md); a command line that cannot be obeyed gets the
// summary on standard error and exit 64.
func TestHelp(t *testing.T) {
	type want struct {
		code             int
		stdout, stderr   []string // must contain each
		noStdout, noErrs bool     // must be empty
	}
	summary := []string{"Usage:\n  dirlockd run -D DIR", "dirlockd completion bash|zsh|fish", "dirlockd version", "Global flags"}
	cases := map[string]want{
		"":                {code: exitcode.Usage, stderr: summary, noStdout: true},
		"bogus":           {code: exitcode.Usage, stderr: append([]string{`unknown command "bogus"`}, summary...), noStdout: true},
		"help":            {stdout: summary, noErrs: true},
		"-h":              {stdout: summary, noErrs: true},
		"--help":          {stdout: summary, noErrs: true},
		"version -h":      {stdout: []string{"Usage:\n  dirlockd version\n"}, noErrs: true},
		"help version":    {stdout: []string{"Usage:\n  dirlockd version\n"}, noErrs: true},
		"version x":       {code: exitcode.Usage, stderr: []string{`dirlockd version: unexpected argument "x"`}, noStdout: true},
		"completion -h":   {stdout: []string{"Usage:\n  dirlockd completion bash|zsh|fish\n"}, noErrs: true},
		"help completion": {stdout: []string{"Usage:\n  dirlockd completion bash|zsh|fish\n"}, noErrs: true},
		"completion":      {code: exitcode.Usage, stderr: []string{"dirlockd completion: want one of bash, zsh or fish"}, noStdout: true},
		"completion tcsh": {code: exitcode.Usage, stderr: []string{"dirlockd completion: want one of bash, zsh or fish"}, noStdout: true},
		"__man /tmp":      {code: exitcode.Usage, stderr: []string{`unknown command "__man"`}, noStdout: true}, // only with -tags manpages
	}
	for _, c := range []string{"run", "check", "status", "stop", "wait", "stress"} {
		w := want{stdout: []string{"\nUsage:\n  dirlockd " + c + " -D DIR", "\nFlags:\n  -D, --datadir", "--log-format", "\nExamples:\n  "}, noErrs: true}
		cases[c+" --help"], cases[c+" -h"], cases["help "+c] = w, w, w
		// --help wins over a bad data directory and stray arguments, not
		// over an unknown flag before it.
		cases[c+" -D /nonexistent --help extra"] = w
		bad := want{code: exitcode.Usage, stderr: []string{"unknown flag: --bogus", `Run "dirlockd ` + c + ` --help"`}, noStdout: true}
		if c == "status" {
			bad.code = exitcode.StatusUnknown // LSB: unknown
		}
		cases[c+" --bogus --help"] = bad
	}
	for line, w := range cases {
		code, out, stderr := cliEnv(t, nil, strings.Fields(line)...)
		if code != w.code || (w.noStdout && out != "") || (w.noErrs && stderr != "") {
			t.Errorf("dirlockd %s: exit %d, stdout %q, stderr %q; want exit %d, stdout empty %v, stderr empty %v",
				line, code, out, stderr, w.code, w.noStdout, w.noErrs)
			continue
		}
		for _, s := range w.stdout {
			if !strings.Contains(out, s) {
				t.Errorf("dirlockd %s: stdout lacks %q:\n%s", line, s, out)
			}
		}
		for _, s := range w.stderr {
			if !strings.Contains(stderr, s) {
				t.Errorf("dirlockd %s: stderr lacks %q:\n%s", line, s, stderr)
			}
		}
	}
}

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
	time.Sleep(100 * time.Millisecond)
	if !cliAlive(victim.Process.Pid) {
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
	eventually(t, 5*time.Second, "the server's sleep", func() bool {
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
	eventually(t, 5*time.Second, "the server's processes to die", func() bool {
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
	eventually(t, 5*time.Second, "a process queued on the pidfile lock", func() bool {
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
	if !cliAlive(queued.Process.Pid) {
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
	time.Sleep(200 * time.Millisecond)
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

// cliBackground starts the binary with args and returns a channel closed
// when it exits (read its stderr only then); the process is killed at the
// end of the test.
func cliBackground(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return cmd, stderr, done
}

// TestWaitReadyThenFree: the server listens a second after it starts, and
// only once the test opens a gate, so "not ready yet" is certain while the
// gate is shut.
func TestWaitReadyThenFree(t *testing.T) {
	dir := cliDataDir(t)
	gate := filepath.Join(t.TempDir(), "gate")
	port := testutil.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	start := time.Now()
	w := startRun(t, nil, dir, []string{"--ready-tcp", addr}, "sh", "-c",
		fmt.Sprintf("sleep 1; while [ ! -e %s ]; do sleep 0.05; done; exec python3 -m http.server --bind 127.0.0.1 %d", gate, port))
	// sh execs python: the pinned PID stays the server.
	r := waitHeld(t, dir, "", 5*time.Second)
	server := cliPin(t, r.ChildPID, w.PID())
	if r.Status != "starting" {
		t.Errorf("status %q before the port is open, want starting", r.Status)
	}

	// Held but not ready: --for ready and --for free both time out.
	code, _, stderr := dirlockd(t, "wait", "-D", dir, "--for", "ready", "--timeout", "300ms")
	if code != 1 || !strings.Contains(stderr, "timed out") || !strings.Contains(stderr, "for=ready") {
		t.Errorf("wait --for ready --timeout 300ms on a starting server: exit %d, stderr %q; want 1, timed out", code, stderr)
	}
	code, _, stderr = dirlockd(t, "wait", "-D", dir, "--for", "free", "--timeout", "300ms")
	if code != 1 || !strings.Contains(stderr, "timed out") || !strings.Contains(stderr, "state=held") {
		t.Errorf("wait --for free --timeout 300ms while held: exit %d, stderr %q; want 1, timed out", code, stderr)
	}

	waiter, werr, waited := cliBackground(t, "wait", "-D", dir, "--for", "ready", "--timeout", "15s")
	select {
	case <-waited:
		t.Fatalf("wait --for ready returned before the server listened: exit %d; %s", waiter.ProcessState.ExitCode(), werr)
	case <-time.After(300 * time.Millisecond):
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	opened := time.Now()
	select {
	case <-waited:
	case <-time.After(15 * time.Second):
		t.Fatalf("wait --for ready did not return; wrapper:\n%s", w.Stderr())
	}
	if code := waiter.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("wait --for ready: exit %d; %s\nwrapper:\n%s", code, werr, w.Stderr())
	}
	if el := time.Since(start); el < 800*time.Millisecond {
		t.Errorf("wait --for ready returned after %v, before the server could listen", el)
	}
	t.Logf("ready %v after the gate opened, %v after the start", time.Since(opened), time.Since(start))
	if c, err := net.DialTimeout("tcp", addr, time.Second); err != nil {
		t.Errorf("wait --for ready returned but %s does not accept: %v", addr, err)
	} else {
		c.Close()
	}
	if r := waitHeld(t, dir, "ready", time.Second); r.ChildPID != server.pid {
		t.Errorf("child_pid %d once ready, %d while starting", r.ChildPID, server.pid)
	}
	if !strings.Contains(w.Stderr(), "via=\"tcp "+addr+"\"") {
		t.Errorf("the wrapper did not mark ready through --ready-tcp:\n%s", w.Stderr())
	}

	// Held and ready: --for free still times out.
	code, _, stderr = dirlockd(t, "wait", "-D", dir, "--for", "free", "--timeout", "300ms")
	if code != 1 || !strings.Contains(stderr, "timed out") || !strings.Contains(stderr, "state=held") {
		t.Errorf("wait --for free --timeout 300ms while held: exit %d, stderr %q; want 1, timed out", code, stderr)
	}

	// A waiter for free returns once stop has freed the directory.
	waiter, werr, waited = cliBackground(t, "wait", "-D", dir, "--for", "free", "--timeout", "15s")
	select {
	case <-waited:
		t.Fatalf("wait --for free returned while held: exit %d; %s", waiter.ProcessState.ExitCode(), werr)
	case <-time.After(300 * time.Millisecond):
	}
	if code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "10s"); code != 0 {
		t.Fatalf("stop: exit %d; %s", code, stderr)
	}
	select {
	case <-waited:
		if code := waiter.ProcessState.ExitCode(); code != 0 {
			t.Errorf("wait --for free after stop: exit %d; %s", code, werr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("wait --for free did not return after stop")
	}
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("wrapper exit %d after stop, want 143 (python killed by SIGTERM); stderr:\n%s", code, w.Stderr())
	}
	if server.alive() {
		t.Errorf("the server %d outlived stop", server.pid)
	}
	code, _, stderr = dirlockd(t, "wait", "-D", dir, "--for", "free", "--timeout", "1s")
	if code != 0 || stderr != "" {
		t.Errorf("wait --for free on a free dir: exit %d, stderr %q", code, stderr)
	}
}

func TestWaitUsage(t *testing.T) {
	dir := cliDataDir(t)
	for _, args := range [][]string{
		{"--for", "started"},
		{"--timeout", "-1s"},
		{"extra"},
	} {
		code, out, stderr := dirlockd(t, append([]string{"wait", "-D", dir}, args...)...)
		if code != exitcode.Usage || out != "" || !strings.Contains(stderr, "want --for free or --for ready") {
			t.Errorf("wait %v: exit %d, stdout %q, stderr %q; want 64", args, code, out, stderr)
		}
	}
	if code, _, stderr := dirlockd(t, "wait", "-D", dir, "--for"); code != exitcode.Usage || !strings.Contains(stderr, "flag needs an argument") {
		t.Errorf("wait --for without a value: exit %d, %q; want 64", code, stderr)
	}
}

// TestRunCheckRefuseHardLinkedPidfile: a pidfile that is a hard link to a
// file elsewhere is invalid to run (78) and check (3), and the other file
// keeps its content and mtime.
func TestRunCheckRefuseHardLinkedPidfile(t *testing.T) {
	dir := cliDataDir(t)
	other := filepath.Join(t.TempDir(), "precious")
	const content = "not dirlockd's: keep me\n"
	if err := os.WriteFile(other, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(other, old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(other, filepath.Join(dir, pidfile.DefaultName)); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := dirlockd(t, "run", "-D", dir, "--", "true")
	if code != exitcode.Invalid || !strings.Contains(stderr, "has 2 links") || !strings.Contains(stderr, "remove the extra link") {
		t.Errorf("run with a hard-linked pidfile: exit %d, stderr %q; want 78 naming the links", code, stderr)
	}
	code, r := check(t, dir)
	if code != 3 || r.State != "invalid" || !strings.Contains(r.Reason, "has 2 links") {
		t.Errorf("check --json with a hard-linked pidfile: exit %d, %+v; want 3, invalid", code, r)
	}
	b, err := os.ReadFile(other)
	fi, serr := os.Stat(other)
	if err != nil || serr != nil || string(b) != content || !fi.ModTime().Equal(old) {
		t.Errorf("the linked file changed: content %q (%v), mtime %v (%v)", b, err, fi.ModTime(), serr)
	}
}
