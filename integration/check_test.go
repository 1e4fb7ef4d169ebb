package integration

// Tests of check and status (and of stop and wait where they meet the same
// directories).

import (
	"encoding/json"
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
	// The orphan is the record's main process: the server runs on
	// without its wrapper.
	if code, out := res[2].code, res[2].out; code != exitcode.StatusUnsupervised || !strings.HasPrefix(out, "running unsupervised: ") ||
		!strings.Contains(out, fmt.Sprintf("main process %d runs on", child.pid)) {
		t.Errorf("status: exit %d, %q; want %d, running unsupervised", code, out, exitcode.StatusUnsupervised)
	}
	if code, stderr := res[3].code, res[3].stderr; code != 1 || !strings.Contains(stderr, "timed out") || !strings.Contains(stderr, "state=orphans") {
		t.Errorf("wait --for free against orphans: exit %d, stderr %q; want 1, timed out in state orphans", code, stderr)
	}
	if !child.alive() {
		t.Errorf("the orphan %d died: something signalled it", child.pid)
	}
	// stop stops it: the record names it as the main process.
	code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "5s")
	if code != 0 || !strings.Contains(stderr, fmt.Sprintf("main_pid=%d", child.pid)) {
		t.Errorf("stop of the unsupervised server: exit %d, stderr %q; want 0", code, stderr)
	}
	testutil.Eventually(t, 10*time.Second, "the unsupervised server gone", func() bool { return !child.alive() })
	stderr = cliReclaim(t, dir)
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
