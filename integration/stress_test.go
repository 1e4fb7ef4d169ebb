package integration

// Tests of dirlockd stress: runs of the built binary against real data
// directories, alone, with kills, two at once sharing one lock (two "hosts"
// that pass), and two at once each with a lock of its own over the same
// witness files (a storage that does not keep the interlock), which the
// check must catch.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/stress"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// stressJSON runs "dirlockd stress ARGS --json" and decodes the report.
func stressJSON(t *testing.T, args ...string) (int, stress.Report, string) {
	t.Helper()
	code, out, stderr := dirlockd(t, append(append([]string{"stress"}, args...), "--json")...)
	return code, decodeStress(t, out, stderr), stderr
}

func decodeStress(t *testing.T, out, stderr string) stress.Report {
	t.Helper()
	var r stress.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("stress --json: %v\nstdout: %s\nstderr: %s", err, out, stderr)
	}
	return r
}

// counterFile reads the witness counter of dir.
func counterFile(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, stress.CounterName))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if _, err := fmt.Sscanf(string(b), "%d\n", &n); err != nil || len(b) != 21 {
		t.Fatalf("counter file %q: %v", b, err)
	}
	return n
}

// noWorkersLeft fails the test if any process still names dir on its
// command line: every worker must be gone when stress exits.
func noWorkersLeft(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(dir)) && bytes.Contains(b, []byte("--worker")) {
			t.Errorf("a worker survived its stress: PID %s: %s", e.Name(), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

func violationsOf(r stress.Report) string {
	var b strings.Builder
	for _, v := range r.Log.Violations {
		fmt.Fprintf(&b, "  %s\n", v)
	}
	return b.String()
}

func TestStressLocal(t *testing.T) {
	dir := testutil.DataDir(t)
	code, r, stderr := stressJSON(t, "-D", dir, "--workers", "4", "--duration", "2s")
	if code != 0 || r.Verdict != stress.Pass || r.Log.ViolationCount != 0 {
		t.Fatalf("exit %d, verdict %s: %s\n%s%s", code, r.Verdict, r.Summary, violationsOf(r), stderr)
	}
	run := r.Run
	if run == nil || run.Acquisitions == 0 || run.Workers != 4 || run.Killed != 0 || run.Rate <= 0 ||
		run.Elapsed < 2*time.Second || run.Wait.P50 <= 0 || run.Wait.P99 < run.Wait.P50 || run.Wait.Max < run.Wait.P99 {
		t.Fatalf("run report %+v", run)
	}
	host, _ := os.Hostname()
	lg := r.Log
	if lg.Entered != run.Acquisitions || lg.Completed != run.Acquisitions || lg.Killed != 0 || lg.Unfinished != 0 ||
		len(lg.Hosts) != 1 || lg.Hosts[0].Host != host || run.Host != host {
		t.Errorf("log report %+v, hosts %+v; want every one of %d acquisitions completed, on host %s", lg, lg.Hosts, run.Acquisitions, host)
	}
	if n := counterFile(t, dir); !lg.CounterChecked || int(lg.Counter) != n || n != lg.Completed {
		t.Errorf("counter file %d, report %d (checked %v), completed holds %d", n, lg.Counter, lg.CounterChecked, lg.Completed)
	}
	noWorkersLeft(t, dir)
	// The directory is left free, released cleanly by the last holder.
	if code, c := check(t, dir); code != 0 || c.State != "free" {
		t.Errorf("check after stress: exit %d, %+v", code, c)
	}
	// A second run adds to the same log and counter.
	code, out, stderr := dirlockd(t, "stress", "-D", dir, "--workers", "2", "--duration", "500ms", "--host-label", "again")
	if code != 0 || !strings.Contains(out, "PASS: no violation") || !strings.Contains(out, "on 2 hosts") {
		t.Errorf("second run: exit %d\n%s%s", code, out, stderr)
	}
}

func TestStressKill(t *testing.T) {
	dir := testutil.DataDir(t)
	code, r, stderr := stressJSON(t, "-D", dir, "--duration", "2s", "--kill-rate", "0.2")
	if code != 0 || r.Log.ViolationCount != 0 {
		t.Fatalf("exit %d, verdict %s: %s\n%s%s", code, r.Verdict, r.Summary, violationsOf(r), stderr)
	}
	if r.Run.Killed == 0 || r.Log.Killed != r.Run.Killed || r.Log.Completed+r.Log.Killed != r.Log.Entered {
		t.Errorf("run %+v, log %+v: want kills, each one logged", r.Run, r.Log)
	}
	// Each killed hold may or may not have written its increment.
	if n := counterFile(t, dir); n < r.Log.Completed || n > r.Log.Completed+r.Log.Killed {
		t.Errorf("counter %d, %d holds completed and %d killed", n, r.Log.Completed, r.Log.Killed)
	}
	noWorkersLeft(t, dir)
	// Verify the same files again, from scratch.
	code, v, _ := stressJSON(t, "-D", dir, "--verify")
	if code != 0 || v.Run != nil || v.Log.Entered != r.Log.Entered || v.Log.Killed != r.Log.Killed {
		t.Errorf("verify: exit %d, %+v", code, v.Log)
	}
}

// TestStressInterrupt: SIGINT (Ctrl-C) stops the workers between holds,
// kills included, and the report covers the shortened run.
func TestStressInterrupt(t *testing.T) {
	dir := testutil.DataDir(t)
	cmd := exec.Command(bin, "stress", "-D", dir, "--duration", "1m", "--kill-rate", "0.3", "--json")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Interrupt it once workers hold and some are being killed.
	testutil.Eventually(t, 30*time.Second, "a kill in the stress log", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, stress.LogName))
		return bytes.Contains(b, []byte(`"ev":"`+stress.EvKilled+`"`))
	})
	cmd.Process.Signal(unix.SIGINT)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("stress still running 10s after SIGINT\n%s", errb.String())
	}
	r := decodeStress(t, out.String(), errb.String())
	if code := cmd.ProcessState.ExitCode(); code != 0 || r.Run.Elapsed > 5*time.Second || r.Run.Acquisitions == 0 || r.Log.Unfinished != 0 {
		t.Errorf("exit %d, run %+v, log %+v\n%s%s", code, r.Run, r.Log, violationsOf(r), errb.String())
	}
	noWorkersLeft(t, dir)
}

// stressConcurrently runs each argv (a command and its arguments) to
// completion, all at the same time, and returns their exit codes and
// decoded reports.
func stressConcurrently(t *testing.T, argvs ...[]string) ([]int, []stress.Report) {
	t.Helper()
	cmds := make([]*exec.Cmd, len(argvs))
	outs := make([]bytes.Buffer, len(argvs))
	errs := make([]bytes.Buffer, len(argvs))
	for i, argv := range argvs {
		cmds[i] = exec.Command(argv[0], argv[1:]...)
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &errs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	codes := make([]int, len(argvs))
	reps := make([]stress.Report, len(argvs))
	for i, c := range cmds {
		c.Wait()
		codes[i], reps[i] = c.ProcessState.ExitCode(), decodeStress(t, outs[i].String(), errs[i].String())
		if t.Failed() {
			t.Logf("%v: stderr:\n%s", argvs[i], errs[i].String())
		}
	}
	return codes, reps
}

// TestStressBrokenLock: two runs at once against one directory, each with a
// pidfile of its own, are two independent locks over the same witness
// files: a storage that does not keep the interlock. One runs in an IPC
// namespace of its own, as on another host: otherwise the directory's
// segment, shared by both pidfiles, would give the other away (orphans).
func TestStressBrokenLock(t *testing.T) {
	dir := testutil.DataDir(t)
	flags := []string{bin, "stress", "-D", dir, "--duration", "2s", "--json"}
	codes, reps := stressConcurrently(t,
		append(slices.Clone(flags), "--pidfile", "a.pid", "--host-label", "a"),
		append([]string{"unshare", "--ipc"}, append(slices.Clone(flags), "--pidfile", "b.pid", "--host-label", "b")...))
	for i, r := range reps {
		if codes[i] != 1 || r.Verdict != stress.Fail || r.Log.ViolationCount == 0 {
			t.Errorf("run %d: exit %d, verdict %s: %s", i, codes[i], r.Verdict, r.Summary)
		}
	}
	code, out, stderr := dirlockd(t, "stress", "-D", dir, "--verify")
	if code != 1 || !strings.Contains(out, "two holders:") || !strings.Contains(out, "FAIL:") || !strings.Contains(out, "do not run a database on it") {
		t.Errorf("verify: exit %d\n%s%s", code, out, stderr)
	}
	_, r, _ := stressJSON(t, "-D", dir, "--verify")
	if !slices.ContainsFunc(r.Log.Violations, func(v stress.Violation) bool { return v.Kind == stress.KindOverlap }) {
		t.Errorf("no two-holders violation among:\n%s", violationsOf(r))
	}
	noWorkersLeft(t, dir)
}

// TestStressTwoHosts: two runs at once on the same lock, labelled as two
// hosts, keep the interlock; --verify then checks the combined log.
func TestStressTwoHosts(t *testing.T) {
	dir := testutil.DataDir(t)
	res := cliConcurrently(t,
		[]string{"stress", "-D", dir, "--duration", "2s", "--workers", "3", "--host-label", "alpha", "--json"},
		[]string{"stress", "-D", dir, "--duration", "2s", "--workers", "3", "--host-label", "beta", "--kill-rate", "0.1", "--json"})
	acq := 0
	for i, c := range res {
		r := decodeStress(t, c.out, c.stderr)
		if c.code != 0 || r.Verdict != stress.Pass {
			t.Errorf("run %d: exit %d: %s\n%s%s", i, c.code, r.Summary, violationsOf(r), c.stderr)
		}
		acq += r.Run.Acquisitions
	}
	code, r, stderr := stressJSON(t, "-D", dir, "--verify")
	if code != 0 || r.Verdict != stress.Pass || r.Run != nil || !strings.Contains(r.Summary, "across 2 hosts") {
		t.Fatalf("verify: exit %d: %s\n%s%s", code, r.Summary, violationsOf(r), stderr)
	}
	hosts := []string{}
	for _, h := range r.Log.Hosts {
		hosts = append(hosts, h.Host)
		if h.Entered == 0 {
			t.Errorf("host %s: no holds", h.Host)
		}
	}
	if !slices.Equal(hosts, []string{"alpha", "beta"}) || r.Log.Entered != acq || !r.Log.CounterChecked {
		t.Errorf("verify: hosts %v, %d holds (runs said %d), %+v", hosts, r.Log.Entered, acq, r.Log)
	}
	code, out, _ := dirlockd(t, "stress", "-D", dir, "--verify")
	if code != 0 || !strings.Contains(out, "PASS: no violation") || !strings.Contains(out, "alpha") || !strings.Contains(out, "beta") {
		t.Errorf("verify as text: exit %d\n%s", code, out)
	}
}

func TestStressNothingToTest(t *testing.T) {
	dir := testutil.DataDir(t)
	code, r, _ := stressJSON(t, "-D", dir, "--verify")
	if code != 1 || r.Verdict != stress.Inconclusive {
		t.Errorf("verify of a fresh directory: exit %d, %+v", code, r)
	}
	if _, err := os.Stat(filepath.Join(dir, stress.LogName)); err == nil {
		t.Error("--verify created the log")
	}
}

func TestStressUsage(t *testing.T) {
	dir := testutil.DataDir(t)
	for _, args := range [][]string{
		{"--workers", "0"},
		{"--workers", "x"},
		{"--duration", "0"},
		{"--hold", "-1ms"},
		{"--kill-rate", "1.5"},
		{"--kill-rate", "-0.1"},
		{"--kill-rate", "NaN"},
		{"--host-label", ""},
		{"--verify", "--workers", "2"},
		{"--verify", "--kill-rate", "0.5"},
		{"--bogus"},
		{"extra"},
	} {
		code, out, stderr := dirlockd(t, append([]string{"stress", "-D", dir}, args...)...)
		if code != exitcode.Usage || out != "" || !strings.Contains(stderr, "dirlockd stress") {
			t.Errorf("stress %v: exit %d, stdout %q, stderr %q; want 64", args, code, out, stderr)
		}
	}
	if code, _, stderr := cliEnv(t, nil, "stress", "--duration", "1s"); code != exitcode.Usage || !strings.Contains(stderr, "no data directory") {
		t.Errorf("stress without -D: exit %d, %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, stress.LogName)); err == nil {
		t.Error("a usage error created the log")
	}
	code, out, _ := dirlockd(t, "stress", "--help")
	for _, want := range []string{"--host-label", "--kill-rate", "--verify", "several clients", "scratch directory", "delete both", "PASS", "FAIL"} {
		if !strings.Contains(out, want) {
			t.Errorf("stress --help lacks %q", want)
		}
	}
	if code != 0 || strings.Contains(out, "--worker ") {
		t.Errorf("stress --help: exit %d (the hidden --worker flag must not show)\n%s", code, out)
	}
}

func TestStressInvalidDir(t *testing.T) {
	dir := testutil.DataDir(t)
	if err := os.Chmod(dir, 0o770); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := dirlockd(t, "stress", "-D", dir, "--duration", "1s")
	if code != exitcode.Invalid || !strings.Contains(stderr, "group- or world-writable") {
		t.Errorf("group-writable directory: exit %d, %s", code, stderr)
	}
	code, _, stderr = dirlockd(t, "stress", "-D", filepath.Join(dir, "missing"), "--verify")
	if code != exitcode.Invalid || !strings.Contains(stderr, "not accessible") {
		t.Errorf("missing directory: exit %d, %s", code, stderr)
	}
}

// TestStressProgress: on a terminal, stress redraws a progress line.
func TestStressProgress(t *testing.T) {
	master, slave := openPTY(t)
	dir := testutil.DataDir(t)
	cmd := exec.Command(bin, "stress", "-D", dir, "--duration", "1s", "--kill-rate", "0.1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var tty bytes.Buffer
	done := make(chan struct{})
	go func() { tty.ReadFrom(master); close(done) }() // ends with EIO once the last writer is gone
	if err := cmd.Wait(); err != nil {
		t.Fatalf("stress: %v\n%s", err, tty.String())
	}
	<-done
	s := tty.String()
	if strings.Count(s, "acquisitions") < 2 || !strings.Contains(s, "\r") || !strings.Contains(s, "violations 0") || !strings.HasSuffix(s, "\r\x1b[K") {
		t.Errorf("terminal got %q", s)
	}
	if strings.Contains(out.String(), "\r") || !strings.Contains(out.String(), "PASS") {
		t.Errorf("stdout (not a terminal) got %q", out.String())
	}
}

// openPTY opens a pseudo-terminal pair, closed when the test ends.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminals (%v): the test needs a devpts mounted with ptmx (mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts; ln -sf pts/ptmx /dev/ptmx)", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock the pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}
