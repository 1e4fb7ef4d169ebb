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
  fuzzers (` + "`FuzzParse`" + ` for the record, ` + "`FuzzArgs`" + ` for the command line, ` + "`FuzzMainPID`" + ` for ` + "`--main-pid-file`" + `, ` + "`FuzzString`" + ` for the escaping of names) run after the table in
  ` + "`make torture`" + `.

Replay a run with ` + "`make torture TORTURE_SEED=<seed>`" + ` (the seed is logged at the start).

## Attacks by another local user

` + "`integration/hostile_test.go`" + ` (run by ` + "`make test`" + `) makes an unprivileged user (useradd, removed by userdel at
the end) and runs the attacks of issue 17 as that user against directories root starts with ` + "`dirlockd run`" + `
([design.md](design.md#hostile-local-users)). Each test failed on the code before issue 17; the figures of one
run:

| attack | attempts | succeeded | before issue 17 |
|---|---:|---:|---|
| look-alike environment (` + "`sleep`" + ` with DIRLOCKD_PIDFILE and a made-up DIRLOCKD_TOKEN) | 4 starts, 4 checks (fresh directory, then after 3 SIGKILLed holders) | 0 | every start 76, check "orphans" |
| squatted key, copied header, attached | 3 starts, 3 checks | 0 | every start 76 naming the user's process |
| forged header in an unattached segment | 3 starts | 0 (segment left alone) | removed by root at the first start |
| all 128 keys of the window filled | 3 starts (IPC_PRIVATE used) | 0 | every start 70 "no free SysV key" |
| ` + "`renameat2(RENAME_EXCHANGE)`" + ` of the data directory and a link to the user's directory, looping | 50 starts in 25 concurrent pairs against ~20,000-30,000 exchanges (stopped after the last start; at most 10^8) | 0: all 50 refused with 78, 0 server intervals, 0 overlaps, no file of root's in the user's directory | 22 of 50 starts ran a server, 1 overlap (two servers at once), a root-owned pidfile in the user's directory |

## Attacks by another local user: run's inputs (issue 17)

From ` + "`" + `integration/attack_cli_test.go` + "`" + `, which ` + "`" + `make test` + "`" + ` runs; the figures are
from ` + "`" + `go test -count=5` + "`" + ` of those tests on the project's machine (2 vCPU, loaded by other test runs),
each attack made by a real unprivileged user that the test creates with ` + "`" + `useradd` + "`" + ` and removes with
` + "`" + `userdel` + "`" + `. Before: the same tests against the ` + "`" + `main` + "`" + ` of 2026-12-07, before the change.

| attack | attempts | succeeded before | succeeded now | now |
|---|---:|---:|---:|---|
| ` + "`" + `--main-pid-file` + "`" + ` a FIFO of the server's user | 5 | 5 (SIGTERM unanswered for 5 s, each) | 0 | refused as not a regular file; SIGTERM answered in 14 ms at worst |
| ` + "`" + `--main-pid-file` + "`" + ` the user's symlink to ` + "`" + `/dev/zero` + "`" + ` | 5 | 5 (1.6 to 3.5 GB resident in 5 s; 4 died "fatal error: out of memory" under a 6 GB address-space limit, leaving an unclean record; 1 left SIGTERM unanswered) | 0 | refused (a user's symlink out to root's ` + "`" + `/` + "`" + `); resident memory under 64 MiB; SIGTERM answered in 16 ms at worst |
| ` + "`" + `--main-pid-file` + "`" + ` the user's symlink to a root-only file | 5 | 5 (its first line in the log) | 0 | refused, its content in no output; SIGTERM answered in 17 ms at worst |
| 20,000 ` + "`" + `READY=1` + "`" + ` datagrams from the user to the notify socket, per attempt | 5 × 20,000 | 5 (20,000 log lines each; no datagram heard) | 0 | 2 log lines each: the first, and the count (19,999) when run ends; the 20,000 sent in 2.4 to 3.4 s |
| ` + "`" + `--recheck 1ns` + "`" + `, ` + "`" + `--stop-timeout 1µs` + "`" + `, ` + "`" + `--takeover-after 10ms` + "`" + ` | 5 × 3 | 15 (accepted; the recheck a busy loop) | 0 | exit 64 naming the floor, nothing created |
| a newline and terminal escapes in ` + "`" + `-D` + "`" + ` (check, status, run's text log) and in a record's hostname (status, check) | 5 × 5 outputs | 25 (printed raw; in the text log the escape cut out silently) | 0 | printed escaped (` + "`" + `\n` + "`" + `, ` + "`" + `\x1b` + "`" + `), one line per line |
| ` + "`" + `status` + "`" + ` of a lock held with no record | 5 | 5 ("pid 0 … host  … status ,") | 0 | "no record:" and the PID holding the lock |
`)
	if keep := sectionOf(path, soakSection); keep != "" {
		b.WriteString("\n" + keep) // make soak-lease's figures
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
