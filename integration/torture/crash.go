package torture

import (
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/fault"
	"github.com/dirlockd/dirlockd/internal/stress"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// Crashes: SIGKILL at every fault point of Acquire and Release, at random
// times while holding, and SIGSTOP/SIGCONT of a holder.
func Crashes() []Scenario {
	return []Scenario{
		{Name: "crash: SIGKILL at every fault point", Run: crashFaultPoints},
		{Name: "crash: SIGKILL at random times while holding", Run: crashRandomKill},
		{Name: "crash: SIGSTOP holder past the recheck interval", Run: crashStopCont},
	}
}

// crashFaultPoints kills "dirlockd run" with SIGKILL at each step of Acquire
// (1 to 6: the server never starts) and of Release (7 to 10: after the server
// completed), and checks that the next plain run gets in at once, that a
// starter killed before it wrote its record left the previous one intact, and
// that no segment of the directory survives a clean run.
func crashFaultPoints(e *Env) Result {
	var r Result
	k := newKit(e, &r)
	defer k.cleanup()
	dir, w := e.DataDir(), e.NewWitness()
	reps := max(2, e.Scale.Iterations/4)
	want := 0
	work := workArgs(e, dir, w)
	// A first clean holder, so that the first crashes have a record to
	// keep intact.
	if code, out := e.Dirlockd([]string{e.WorkerEnv()}, work...); code != 0 {
		r.fail("first run: exit %d: %s", code, tail(out))
	} else {
		want++
	}
	for rep := range reps {
		for step := fault.Opened; step <= fault.ReleaseUnlocked; step++ {
			before := k.pidfile(dir)
			code, out := e.Dirlockd([]string{e.WorkerEnv(), fmt.Sprintf("%s=%d", fault.Env, step)}, work...)
			r.Faults++
			if code != -1 {
				r.fail("rep %d step %d: dirlockd run exited %d, want death by SIGKILL (-1): %s", rep, step, code, tail(out))
			}
			started := strings.Contains(out, "started the server")
			switch {
			case step <= fault.RecordWritten && started:
				r.fail("rep %d step %d: the server was started by a wrapper killed during Acquire", rep, step)
			case step > fault.RecordWritten && !started:
				r.fail("rep %d step %d: the server never ran before the fault in Release: %s", rep, step, tail(out))
			case step > fault.RecordWritten:
				want++
			}
			// Before step 6 writes the new record, a dying starter must
			// leave the previous holder's record as it was.
			if step < fault.RecordWritten {
				if after := k.pidfile(dir); string(after) != string(before) {
					r.fail("rep %d step %d: a starter killed during Acquire changed the pidfile:\nbefore %q\nafter  %q", rep, step, before, after)
				}
			}
			t0 := time.Now()
			code, out = e.Dirlockd([]string{e.WorkerEnv()}, work...)
			if code != 0 {
				r.fail("rep %d step %d: the run after the crash exited %d: %s", rep, step, code, tail(out))
				continue
			}
			k.live(time.Since(t0))
			want++
			// That run released cleanly: nothing of the crash may remain.
			noSegmentsDir(k.r, fmt.Sprintf("rep %d step %d, after the next clean run", rep, step), dir)
		}
	}
	k.finish(dir)
	return verify(w, r, want, k.notes())
}

// crashRandomKill SIGKILLs a holder (wrapper and server) at a random moment
// after it is up, on half the iterations with a pause in between in which
// only the wrapper is dead: the server's inherited lock must then keep every
// starter out (76) without a byte of the pidfile changing.
func crashRandomKill(e *Env) Result {
	var r Result
	k := newKit(e, &r)
	defer k.cleanup()
	dir, w := e.DataDir(), e.NewWitness()
	want, orphanChecks := 0, 0
	for i := range e.Scale.Iterations {
		p, err := k.start(e.Bin, runArgs(dir, nil, e.WorkerArgs("hold", w.Dir)...), e.WorkerEnv())
		if err != nil {
			r.fail("iteration %d: start: %v", i, err)
			break
		}
		rep, err := waitHeld(e, dir, p, 10*time.Second)
		ok := err == nil
		if !ok {
			r.fail("iteration %d: the holder never came up: %s", i, tail(p.Output()))
			k.killTree(p.PID())
			continue
		}
		child := rep.ChildPID
		k.track(child)
		token := k.token(dir)
		// The server must be inside its hold (its enter logged) for the
		// kill to be a kill inside a hold.
		if !p.WaitOutput("holding", 10*time.Second) {
			r.fail("iteration %d: the server %d never entered the witness: %s", i, child, tail(p.Output()))
			k.killTree(p.PID())
			continue
		}
		time.Sleep(time.Duration(e.Rand.IntN(51)) * time.Millisecond)
		var tKill time.Time
		var sent int64
		if i%2 == 1 {
			// Only the wrapper dies; the server keeps the lock.
			syscall.Kill(p.PID(), syscall.SIGKILL)
			r.Faults++
			if _, ok := p.Exited(10 * time.Second); !ok {
				r.fail("iteration %d: the wrapper %d survived SIGKILL", i, p.PID())
			}
			before := k.pidfile(dir)
			code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...)
			orphanChecks++
			if code != exitcode.Orphans || !mentions(out, child) {
				r.fail("iteration %d: a starter while the server %d of a killed wrapper lives: exit %d, want 76 naming it%s: %s",
					i, child, code, tornNote(before), tail(out))
			}
			if after := k.pidfile(dir); string(after) != string(before) {
				r.fail("iteration %d: a refused starter changed the pidfile:\nbefore %q\nafter  %q", i, before, after)
			}
			sent = stress.MonoNow()
			if !testutil.KillPID(child) {
				r.fail("iteration %d: the server %d survived SIGKILL", i, child)
			}
			r.Faults++
			tKill = time.Now()
		} else {
			sent = stress.MonoNow()
			syscall.Kill(p.PID(), syscall.SIGKILL)
			syscall.Kill(child, syscall.SIGKILL)
			tKill = time.Now()
			r.Faults++
			if _, ok := p.Exited(10 * time.Second); !ok || !testutil.WaitDead(child, 10*time.Second) {
				r.fail("iteration %d: the wrapper %d or the server %d survived SIGKILL", i, p.PID(), child)
			}
		}
		// Both confirmed dead: only now may the next holder start.
		if err := w.Killed(token, child, sent); err != nil {
			r.fail("witness: %v", err)
		}
		code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w, "--wait", "10s")...)
		if code != 0 {
			r.fail("iteration %d: the run after the kill exited %d: %s", i, code, tail(out))
			continue
		}
		k.live(time.Since(tKill))
		want++
	}
	k.finish(dir)
	return verify(w, r, want, fmt.Sprintf(", %d orphan refusals checked%s", orphanChecks, k.notes()))
}

// crashStopCont stops a holder with SIGSTOP for longer than several recheck
// intervals: it still holds (a contender gets 75, the pidfile is untouched),
// and once continued it must not believe it lost the directory: it keeps
// running, keeps its heartbeat, and stops cleanly when asked.
func crashStopCont(e *Env) Result {
	var r Result
	k := newKit(e, &r)
	defer k.cleanup()
	dir, w := e.DataDir(), e.NewWitness()
	want, torn := 0, 0
	for i := range max(2, e.Scale.Iterations/8) {
		p, err := k.start(e.Bin, runArgs(dir, []string{"--recheck", "200ms"}, e.WorkerArgs("hold", w.Dir)...), e.WorkerEnv())
		if err != nil {
			r.fail("iteration %d: start: %v", i, err)
			break
		}
		rep, err := waitHeld(e, dir, p, 10*time.Second)
		ok := err == nil
		if ok && !p.WaitOutput("holding", 10*time.Second) {
			ok = false
		}
		if !ok {
			r.fail("iteration %d: the holder never came up: %s", i, tail(p.Output()))
			k.killTree(p.PID())
			continue
		}
		k.track(rep.ChildPID)
		// Wait for a recheck to pass, so that there is a heartbeat to
		// compare.
		var beat string
		for deadline := time.Now().Add(10 * time.Second); beat == "" && time.Now().Before(deadline) && p.Alive(); time.Sleep(20 * time.Millisecond) {
			beat = k.heartbeat(dir)
		}
		if beat == "" {
			r.fail("iteration %d: no heartbeat within 10s of a 200ms recheck: %s", i, tail(p.Output()))
		}

		// A stop that lands inside a heartbeat rewrite (between its write
		// and its truncate) freezes a torn record, which the holder itself
		// repairs once continued: stop again until the record is whole, so
		// that the byte comparison below judges only the contender.
		var before []byte
		var stopped time.Time
		for try := 0; ; try++ {
			stopped = time.Now()
			syscall.Kill(p.PID(), syscall.SIGSTOP)
			if before = k.pidfile(dir); try == 20 {
				break
			}
			if _, err := pidfile.Parse(before); err == nil {
				break
			}
			torn++
			syscall.Kill(p.PID(), syscall.SIGCONT)
			time.Sleep(20 * time.Millisecond)
		}
		r.Faults++
		code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...)
		if code != exitcode.Held {
			r.fail("iteration %d: a contender while the holder is stopped: exit %d, want 75: %s", i, code, tail(out))
		}
		if after := k.pidfile(dir); string(after) != string(before) {
			r.fail("iteration %d: a refused contender (or a stopped holder) changed the pidfile:\nbefore %q\nafter  %q", i, before, after)
		}
		time.Sleep(time.Until(stopped.Add(time.Second)))
		syscall.Kill(p.PID(), syscall.SIGCONT)

		// Until a recheck after SIGCONT has passed (a new heartbeat), or
		// the wrapper gives up: time for it to notice anything.
		frozen := ""
		if rec, err := pidfile.Parse(before); err == nil {
			frozen = rec.Extra[testutil.RecordHeartbeat]
		}
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && p.Alive(); time.Sleep(20 * time.Millisecond) {
			if hb := k.heartbeat(dir); hb != "" && hb != frozen {
				break
			}
		}
		if !p.Alive() {
			r.fail("iteration %d: the wrapper exited after SIGCONT (it must not think it lost the lock): %s", i, tail(p.Output()))
		} else if code, rep, out := check(e, dir); code != 1 || rep.State != "held" || rep.PID != p.PID() {
			r.fail("iteration %d: after SIGCONT check says exit %d state %s pid %d, want held by the wrapper %d: %s", i, code, rep.State, rep.PID, p.PID(), out)
		} else if hb := k.heartbeat(dir); hb == "" || hb == beat || hb == frozen {
			r.fail("iteration %d: no heartbeat after SIGCONT (before the stop %q, now %q): the recheck did not pass", i, beat, hb)
		}
		if strings.Contains(p.Output(), "interlock is lost") {
			r.fail("iteration %d: the wrapper reported the interlock lost after SIGSTOP: %s", i, tail(p.Output()))
		}
		if code, out := e.Dirlockd(nil, "stop", "-D", dir, "--timeout", "10s"); code != 0 {
			r.fail("iteration %d: dirlockd stop: exit %d: %s", i, code, tail(out))
		}
		code, ok = p.Exited(10 * time.Second)
		if !ok {
			r.fail("iteration %d: the wrapper did not exit after stop", i)
			k.killTree(p.PID())
			continue
		}
		if code != 0 {
			r.fail("iteration %d: the wrapper exited %d after a clean stop, want 0: %s", i, code, tail(p.Output()))
		} else {
			want++
		}
	}
	// A last plain run: the directory must be free at once.
	t0 := time.Now()
	if code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...); code != 0 {
		r.fail("final run: exit %d: %s", code, tail(out))
	} else {
		k.live(time.Since(t0))
		want++
	}
	k.finish(dir)
	notes := k.notes()
	if torn > 0 {
		notes += fmt.Sprintf(", %d stops froze a torn record", torn)
	}
	return verify(w, r, want, notes)
}
