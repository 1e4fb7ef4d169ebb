package torture

import (
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"time"
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
	var r Result
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range e.Scale.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(e.Worker[0], append(e.Worker[1:], "lib", dir, w.Dir, e.Scale.Hold.String(), strconv.Itoa(per))...)
			cmd.Env = append(cmd.Environ(), e.WorkerEnv())
			if out, err := cmd.CombinedOutput(); err != nil {
				mu.Lock()
				r.Violations = append(r.Violations, fmt.Sprintf("library contender failed: %v: %s", err, out))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return verify(w, r, e.Scale.Concurrency*per, "")
}

// stormRun runs Concurrency goroutines, each starting "dirlockd run --wait"
// with a worker, again and again.
func stormRun(e *Env) Result {
	dir, w := e.DataDir(), e.NewWitness()
	per := max(1, e.Scale.Iterations*12/e.Scale.Concurrency)
	var r Result
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range e.Scale.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				args := append([]string{"run", "-D", dir, "--wait", "5m", "--recheck", "0", "--"},
					e.WorkerArgs("work", w.Dir, e.Scale.Hold.String())...)
				if code, out := e.Dirlockd([]string{e.WorkerEnv()}, args...); code != 0 {
					mu.Lock()
					r.Violations = append(r.Violations, fmt.Sprintf("dirlockd run exited %d: %s", code, out))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return verify(w, r, e.Scale.Concurrency*per, "")
}

// verify adds the witness's verdict to r: want holders must have completed.
func verify(w Witness, r Result, want int, notes string) Result {
	v, err := w.Verify()
	if err != nil {
		r.Violations = append(r.Violations, "witness unreadable: "+err.Error())
		return r
	}
	r.Violations = append(r.Violations, v.Violations...)
	if want >= 0 && v.Completed != want {
		r.Violations = append(r.Violations, fmt.Sprintf("%d holders completed, want %d", v.Completed, want))
	}
	r.Iterations += v.Entries
	r.Notes = fmt.Sprintf("%d holders, counter %d%s", v.Entries, v.Counter, notes)
	return r
}

// since is a helper for notes.
func since(t time.Time) string { return time.Since(t).Round(time.Millisecond).String() }
