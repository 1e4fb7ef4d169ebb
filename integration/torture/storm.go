package torture

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/dirlockd/dirlockd/internal/stress"
)

// Storms: many contenders, one data directory, thousands of cycles, no
// faults. Every cycle's holder reports to the witness.
func Storms() []Scenario {
	return []Scenario{
		{Name: "storm: library Acquire/Release", Run: stormLibrary},
		{Name: "storm: dirlockd run -- worker", Run: stormRun},
	}
}

// stormLibrary runs Concurrency processes, each cycling Acquire (waiting),
// witness work, Release.
func stormLibrary(e *Env) Result {
	dir, w := e.DataDir(), e.NewWitness()
	per := max(1, e.Scale.Iterations*50/e.Scale.Concurrency)
	r := Result{Violations: fanOut(e.Scale.Concurrency, func() error {
		cmd := exec.Command(e.Worker[0], append(e.Worker[1:], "lib", dir, w.Dir, e.Scale.Hold.String(), strconv.Itoa(per))...)
		cmd.Env = append(cmd.Environ(), e.WorkerEnv())
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("library contender failed: %v: %s", err, out)
		}
		return nil
	})}
	return verify(w, r, e.Scale.Concurrency*per, "")
}

// stormRun runs Concurrency goroutines, each starting "dirlockd run --wait"
// with a worker, again and again.
func stormRun(e *Env) Result {
	dir, w := e.DataDir(), e.NewWitness()
	per := max(1, e.Scale.Iterations*12/e.Scale.Concurrency)
	r := Result{Violations: fanOut(e.Scale.Concurrency, func() error {
		for range per {
			args := append([]string{"run", "-D", dir, "--wait", "5m", "--recheck", "0", "--"},
				e.WorkerArgs("work", w.Dir, e.Scale.Hold.String())...)
			if code, out := e.Dirlockd([]string{e.WorkerEnv()}, args...); code != 0 {
				return fmt.Errorf("dirlockd run exited %d: %s", code, out)
			}
		}
		return nil
	})}
	return verify(w, r, e.Scale.Concurrency*per, "")
}

// fanOut runs f in n goroutines at once and returns their failures.
func fanOut(n int, f func() error) []string {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var fails []string
	for range n {
		wg.Go(func() {
			if err := f(); err != nil {
				mu.Lock()
				fails = append(fails, err.Error())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return fails
}

// verify adds the witness's verdict (stress.Check) to r: want holders must
// have completed (unless want is negative), and every hold must have ended,
// by its exit or a kill the harness logged. Iterations stays what the
// scenario counted, if it counted anything (the storage and bad-input
// scenarios count every dirlockd start, not only those that reached the
// witness); else it is the holders the witness saw.
func verify(w Witness, r Result, want int, notes string) Result {
	v, err := stress.Check(w.Dir)
	if err != nil {
		r.Violations = append(r.Violations, "witness unreadable: "+err.Error())
		return r
	}
	for _, x := range v.Violations {
		r.Violations = append(r.Violations, "witness: "+x.String())
	}
	if more := v.ViolationCount - len(v.Violations); more > 0 {
		r.Violations = append(r.Violations, fmt.Sprintf("witness: %d more violations", more))
	}
	if !v.CounterChecked {
		r.Violations = append(r.Violations, "witness: the counter was not compared with the log: "+strings.Join(v.Notes, "; "))
	}
	if v.Unfinished > 0 || v.Pending > 0 {
		r.Violations = append(r.Violations, fmt.Sprintf("witness: %d holds neither exited nor were reported killed: %s",
			v.Unfinished+v.Pending, strings.Join(v.Notes, "; ")))
	}
	if want >= 0 && v.Completed != want {
		r.Violations = append(r.Violations, fmt.Sprintf("%d holders completed, want %d", v.Completed, want))
	}
	if r.Iterations == 0 {
		r.Iterations = v.Entered
	}
	r.Notes = fmt.Sprintf("%d holders, counter %d%s", v.Entered, v.Counter, notes)
	return r
}
