package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/integration/torture"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// tortureScale reads the scale from the environment: DIRLOCKD_TORTURE_ITER,
// _CONC and _HOLD override the CI scale (make torture raises them), _SEED
// replays a run, and DIRLOCKD_TORTURE_ONLY=TEXT runs the scenarios whose name
// contains TEXT.
func tortureScale(t *testing.T) (torture.Scale, uint64) {
	s := torture.CI
	atoi := func(k string, v *int) {
		if x, err := strconv.Atoi(os.Getenv(k)); err == nil && x > 0 {
			*v = x
		}
	}
	atoi("DIRLOCKD_TORTURE_ITER", &s.Iterations)
	atoi("DIRLOCKD_TORTURE_CONC", &s.Concurrency)
	if d, err := time.ParseDuration(os.Getenv("DIRLOCKD_TORTURE_HOLD")); err == nil {
		s.Hold = d
	}
	seed := uint64(time.Now().UnixNano())
	if x, err := strconv.ParseUint(os.Getenv("DIRLOCKD_TORTURE_SEED"), 10, 64); err == nil {
		seed = x
	}
	return s, seed
}

func newTortureEnv(t *testing.T) *torture.Env {
	scale, seed := tortureScale(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scale %+v seed %d", scale, seed)
	return &torture.Env{
		Bin: binFault, Worker: []string{self}, Helper: testutil.HelperEnv,
		Work: t.TempDir(), Scale: scale, Rand: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		Logf: t.Logf,
	}
}

// TestTorture runs the reliability scenarios at the CI scale (make torture
// runs them bigger and writes docs/reliability.md). Any violated invariant
// fails the test.
func TestTorture(t *testing.T) {
	e := newTortureEnv(t)
	results := torture.Run(e, torture.All(os.Getenv("DIRLOCKD_TORTURE_ONLY")))
	table := torture.Table(results)
	t.Logf("\n%s", table)
	for _, r := range results {
		for _, v := range r.Violations {
			t.Errorf("%s: %s", r.Scenario, v)
		}
	}
	if path := os.Getenv("DIRLOCKD_TORTURE_REPORT"); path != "" && !t.Failed() {
		if err := writeReport(path, e.Scale, table); err != nil {
			t.Error(err)
		}
	}
}

func writeReport(path string, s torture.Scale, table string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Reliability\n\n")
	fmt.Fprintf(&b, "dirlockd promises one thing: never two holders of a data directory, and never stuck after a crash.\n"+
		"This page is that promise in figures. It is written by `make torture`; the last run:\n\n"+
		"    %s\n\n"+
		"on %s, the project's machine (2 vCPU, Linux, ext4 and tmpfs), at scale: iterations %d, concurrency %d, hold %v.\n"+
		"`make test` runs the same scenarios at CI scale (iterations 40) in a few minutes.\n\n",
		os.Getenv("DIRLOCKD_TORTURE_COMMAND"), time.Now().UTC().Format("2006-01-02"), s.Iterations, s.Concurrency, s.Hold)
	b.WriteString(table)
	b.WriteString(`
## What every scenario checks

- **Mutual exclusion.** The witness files of ` + "`dirlockd stress`" + `: every holder appends numbered enter and exit
  lines (writer, sequence number, PID, acquisition token, CLOCK_MONOTONIC time) to a log opened O_APPEND, and
  increments a counter file with a deliberate read-sleep-write. Its checker replays the log: no line torn or lost,
  no enter between another holder's enter and its exit (or the harness's line that the holder was killed, written
  only after its whole process tree was confirmed dead, for a SIGKILL sent before the next enter), every hold ended,
  and each enter reads what the last hold wrote. Neither witness trusts dirlockd.
- **Liveness.** After every crash, once the old process tree is gone, the next start gets in without human action,
  within a bounded time (the worst case is in the notes).
- **No leaks.** No SysV segment naming the data directory and no process is left after a scenario; the test
  binary also compares the machine's segment list before and after the whole suite.
- **Nothing lost.** A refused or failed starter never changes the previous holder's pidfile.

## The scenario families

- **storm**: 64 contender processes cycling on one directory, through the library (` + "`interlock.Acquire`" + ` waiting,
  work, Release) and through ` + "`dirlockd run --wait`" + ` with a worker as the server.
- **crash**: SIGKILL at every fault point of Acquire and Release (a hook compiled only with ` + "`-tags faultinject`" + `,
  so release builds carry none), SIGKILL of the wrapper and server at random times while holding, and SIGSTOP of a
  holder for longer than the recheck interval.
- **orphans**: the wrapper killed while its server lives on holding the inherited descriptor, after closing every
  descriptor (found by its DIRLOCKD_TOKEN), or attached to the segment.
- **identity**: stale records naming live unrelated processes (PID 1, the harness, its parent, a sleep) that
  stop must not signal; holders racing from different PID and IPC namespaces.
- **storage**: ENOSPC and inode exhaustion on a small tmpfs, read-only remounts, the data directory renamed or
  removed under a running holder.
- **bad input**: every class of malformed pidfile, wrong file types, owners and modes, foreign segments at every
  probed key, a segment removed under a holder, shm_rmid_forced in an IPC namespace, bad command lines. The
  fuzzers (` + "`FuzzParse`" + ` for the record, ` + "`FuzzArgs`" + ` for the command line) run after the table in
  ` + "`make torture`" + `.

Replay a run with ` + "`make torture TORTURE_SEED=<seed>`" + ` (the seed is logged at the start).
`)
	if keep := sectionOf(path, soakSection); keep != "" {
		b.WriteString("\n" + keep) // make soak-lease's figures
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
