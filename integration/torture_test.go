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
	fmt.Fprintf(&b, "Produced by `%s` on %s (2 vCPU, Linux, ext4 + tmpfs), scale: iterations %d, concurrency %d, hold %v.\n\n",
		os.Getenv("DIRLOCKD_TORTURE_COMMAND"), time.Now().UTC().Format("2006-01-02"), s.Iterations, s.Concurrency, s.Hold)
	b.WriteString(table)
	b.WriteString("\nEvery row's invariants: no two holders at once (witness log of enter/exit events appended O_APPEND, and a\n" +
		"read-sleep-write counter that loses increments on any overlap), a new holder gets in after every crash without\n" +
		"human action, no SysV segment or process left behind, and no failed starter destroys the previous record.\n" +
		"See docs/torture.md for what each scenario does.\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
