// Package torture is dirlockd's reliability harness: it starts holders,
// contenders and victims as real processes, injects faults, and checks the
// invariants dirlockd promises: never two holders, never stuck after a crash,
// nothing leaked, nothing of a holder destroyed by a failed starter.
//
// Mutual exclusion is checked by the witness files of dirlockd stress
// (internal/stress), which do not trust dirlockd: every holder appends
// numbered enter and exit lines to a log opened O_APPEND (the kernel
// serialises the appends, so the file order is the order they happened in,
// and a torn or lost line is itself evidence), and increments a counter
// file with a deliberate read-sleep-write that loses increments whenever two
// holders overlap. The harness logs each kill of a holder once the death is
// confirmed, and stress.Check judges the log. The scenarios live in this
// package so that the CI test run (minutes) and a soak run (hours) share
// them.
package torture

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/dirlockd/dirlockd/internal/stress"
)

// Scale sets how hard the scenarios push. CI uses a scale that finishes in
// minutes; a soak run multiplies it.
type Scale struct {
	Iterations  int           // cycles per scenario (each scenario scales its own loops from it)
	Concurrency int           // contenders at once in the storms
	Hold        time.Duration // how long a holder works inside
}

// CI is the scale the test suite runs at.
var CI = Scale{Iterations: 40, Concurrency: 64, Hold: time.Millisecond}

// Env is what every scenario gets.
type Env struct {
	Bin    string   // dirlockd built with -tags faultinject
	Worker []string // argv that runs this package's WorkerMain (a re-executed test binary)
	Helper string   // name of the env var that selects a helper in Worker's binary
	Work   string   // scratch directory, removed by the caller
	Scale  Scale
	Rand   *rand.Rand
	Logf   func(format string, args ...any)

	n int // counter for fresh directories
}

// Result is one row of the report.
type Result struct {
	Scenario   string
	Iterations int           // what was repeated, counted
	Faults     int           // faults injected (kills, stops, bad inputs, ...)
	Violations []string      // broken invariants: must be none
	Took       time.Duration // wall time
	Notes      string
}

// Scenario is a named test of the promise.
type Scenario struct {
	Name string
	Run  func(e *Env) Result
}

// DataDir makes a fresh data directory (0700) under the scratch directory.
func (e *Env) DataDir() string {
	e.n++
	d := filepath.Join(e.Work, fmt.Sprintf("data%d", e.n))
	if err := os.Mkdir(d, 0o700); err != nil {
		panic(err)
	}
	return d
}

// Witness is a pair of witness files (stress.LogName and
// stress.CounterName in Dir, outside the data directories) that the holders
// of a scenario report to, and the harness's own writer on them, which logs
// the kills it confirms. A server under "dirlockd run" writes as the writer
// named by its $DIRLOCKD_TOKEN (serverEnter), so that a kill of it can name
// it.
type Witness struct {
	Dir     string
	harness *stress.Witness
}

// witnessHost is the host label of every line of a witness: all its
// writers run on this machine.
const witnessHost = "torture"

// NewWitness makes a fresh witness under the scratch directory.
func (e *Env) NewWitness() Witness {
	e.n++
	dir := filepath.Join(e.Work, fmt.Sprintf("witness%d", e.n))
	if err := os.Mkdir(dir, 0o700); err != nil {
		panic(err)
	}
	w, err := stress.NewWitness(dir, "", witnessHost)
	if err != nil {
		panic(err)
	}
	return Witness{Dir: dir, harness: w}
}

// Killed logs that the server of the hold token, PID pid, was sent SIGKILL
// at signalled (stress.MonoNow) and is dead. Call it once the death is
// confirmed and before the next holder may start.
func (w Witness) Killed(token string, pid int, signalled int64) error {
	return w.harness.Killed(token, pid, token, signalled)
}

// callTimeout bounds one dirlockd command. It must exceed every --wait a
// scenario passes: waiters poll, and polling is not fair, so in a storm one
// contender can wait minutes for its turn without anything being wrong.
const callTimeout = 15 * time.Minute

// Dirlockd runs the dirlockd binary to completion (bounded by callTimeout)
// and returns its exit code and combined output. Extra environment entries
// come from env.
func (e *Env) Dirlockd(env []string, args ...string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.Bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Run()
	return cmd.ProcessState.ExitCode(), out.String()
}

// WorkerArgs is the command line that runs helper name (WorkerMain modes)
// with args: append it after "dirlockd run -D DIR --".
func (e *Env) WorkerArgs(mode string, args ...string) []string {
	return append(append(append([]string{}, e.Worker...), mode), args...)
}

// WorkerEnv is the environment entry that makes Worker's binary run
// WorkerMain.
func (e *Env) WorkerEnv() string { return e.Helper + "=torture-worker" }

// Run runs the scenarios in order and returns their results.
func Run(e *Env, scenarios []Scenario) []Result {
	var out []Result
	for _, s := range scenarios {
		start := time.Now()
		r := s.Run(e)
		r.Scenario, r.Took = s.Name, time.Since(start)
		e.Logf("%-40s iterations=%d faults=%d violations=%d took=%v %s", r.Scenario, r.Iterations, r.Faults, len(r.Violations), r.Took.Round(time.Millisecond), r.Notes)
		for _, v := range r.Violations {
			e.Logf("    VIOLATION: %s", v)
		}
		out = append(out, r)
	}
	return out
}

// Table renders results as a Markdown table.
func Table(rs []Result) string {
	var b strings.Builder
	b.WriteString("| scenario | iterations | faults injected | violations | time | notes |\n|---|---:|---:|---:|---:|---|\n")
	var it, fl, vi int
	var took time.Duration
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s |\n", r.Scenario, r.Iterations, r.Faults, len(r.Violations),
			r.Took.Round(100*time.Millisecond), r.Notes)
		it, fl, vi, took = it+r.Iterations, fl+r.Faults, vi+len(r.Violations), took+r.Took
	}
	fmt.Fprintf(&b, "| **total** | %d | %d | %d | %s | |\n", it, fl, vi, took.Round(100*time.Millisecond))
	return b.String()
}
