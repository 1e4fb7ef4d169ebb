package torture

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/stress"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// Orphans: a wrapper killed while processes of its server survive.
func Orphans() []Scenario {
	return []Scenario{
		{Name: "orphans: inherited lock descriptor", Run: orphansInherited},
		{Name: "orphans: server closed its descriptors", Run: orphansClosedFDs},
		{Name: "orphans: helper attached to the segment", Run: orphansAttached},
	}
}

// wrapper is SIGKILLed. Starters must refuse with 76 naming the server (the
// lock witness), check must name it as the only orphan, and once it is gone
// the directory is stale, then free after the next run.
func orphansInherited(e *Env) Result {
	return orphanCycle(e, "hold", "holding", "inherited lock")
}

// orphansClosedFDs: the server closed the locked descriptor at start-up, as
// daemons do; only its DIRLOCKD_TOKEN (the token witness) betrays it.
func orphansClosedFDs(e *Env) Result {
	return orphanCycle(e, "closefds-sleep", "sleeping", "token")
}

func orphanCycle(e *Env, mode, ready, what string) Result {
	var r Result
	k := newKit(e, &r)
	defer k.cleanup()
	dir, w := e.DataDir(), e.NewWitness()
	work := workArgs(e, dir, w)
	want := 0
	var refusal time.Duration
	for i := range max(2, e.Scale.Iterations/8) {
		p, err := k.start(e.Bin, runArgs(dir, nil, e.WorkerArgs(mode, w.Dir)...), e.WorkerEnv())
		if err != nil {
			r.fail("iteration %d: start: %v", i, err)
			break
		}
		rep, err := waitHeld(e, dir, p, 10*time.Second)
		ok := err == nil
		if ok && !p.WaitOutput(ready, 10*time.Second) {
			ok = false
		}
		if !ok {
			r.fail("iteration %d: the holder never came up: %s", i, tail(p.Output()))
			k.killTree(p.PID())
			continue
		}
		child := rep.ChildPID
		k.track(child)
		token := k.token(dir)
		syscall.Kill(p.PID(), syscall.SIGKILL)
		r.Faults++
		if _, ok := p.Exited(10 * time.Second); !ok {
			r.fail("iteration %d: the wrapper %d survived SIGKILL", i, p.PID())
		}

		before := k.pidfile(dir)
		t0 := time.Now()
		code, out := e.Dirlockd([]string{e.WorkerEnv()}, work...)
		refusal = max(refusal, time.Since(t0))
		if code != exitcode.Orphans || !mentions(out, child) {
			r.fail("iteration %d: a starter while the server %d (%s) of a killed wrapper lives: exit %d, want 76 naming it: %s",
				i, child, what, code, tail(out))
		}
		if code, rep, out := check(e, dir); code != 2 || rep.State != "orphans" || !slices.Equal(rep.Orphans, []int{child}) {
			r.fail("iteration %d: check with the server %d orphaned: exit %d, state %s, orphans %v; want 2, orphans [%d]: %s",
				i, child, code, rep.State, rep.Orphans, child, tail(out))
		}
		if after := k.pidfile(dir); string(after) != string(before) {
			r.fail("iteration %d: a refused starter (or check) changed the pidfile:\nbefore %q\nafter  %q", i, before, after)
		}

		sent := stress.MonoNow()
		if !testutil.KillPID(child) {
			r.fail("iteration %d: the server %d survived SIGKILL", i, child)
		}
		tKill := time.Now()
		if err := w.Killed(token, child, sent); err != nil {
			r.fail("witness: %v", err)
		}
		if code, rep, out := check(e, dir); code != 0 || rep.State != "stale" {
			r.fail("iteration %d: check once the orphan is dead: exit %d, state %s; want 0, stale: %s", i, code, rep.State, tail(out))
		}
		if code, out := e.Dirlockd([]string{e.WorkerEnv()}, work...); code != 0 {
			r.fail("iteration %d: the run after the orphan died exited %d: %s", i, code, tail(out))
			continue
		}
		k.live(time.Since(tKill))
		want++
		if code, rep, out := check(e, dir); code != 0 || rep.State != "free" {
			r.fail("iteration %d: check after a clean run: exit %d, state %s; want 0, free: %s", i, code, rep.State, tail(out))
		}
	}
	k.finish(dir)
	return verify(w, r, want, fmt.Sprintf(", refusal took up to %v%s", refusal.Round(time.Millisecond), k.notes()))
}

// orphansAttached: the server starts a helper that attaches the segment by
// id, with neither the locked descriptor nor the token, and exits. The
// helper is still of the server's tree, so the wrapper holds the directory
// for it; the wrapper is then SIGKILLed, which leaves the helper an orphan
// outside any supervision, attached to the segment. The next starter must
// find it through the segment id in the record, refuse with 76 and name it.
func orphansAttached(e *Env) Result {
	var r Result
	k := newKit(e, &r)
	defer k.cleanup()
	dir, w := e.DataDir(), e.NewWitness()
	hold := e.Scale.Hold.String()
	work := workArgs(e, dir, w)
	want := 0
	gcRe := regexp.MustCompile(`grandchild (\d+)`)
	var segNote string
	for i := range max(2, e.Scale.Iterations/8) {
		p, err := k.start(e.Bin, runArgs(dir, nil, e.WorkerArgs("spawn-attacher", w.Dir, hold)...), e.WorkerEnv())
		if err != nil {
			r.fail("iteration %d: start: %v", i, err)
			break
		}
		if !p.WaitOutput("the command exited", 20*time.Second) {
			r.fail("iteration %d: the server did not exit: %s", i, tail(p.Output()))
			k.killTree(p.PID())
			continue
		}
		m := gcRe.FindStringSubmatch(p.Output())
		if m == nil {
			r.fail("iteration %d: the server started no attached helper: %s", i, tail(p.Output()))
			k.killTree(p.PID())
			continue
		}
		gc, _ := strconv.Atoi(m[1])
		k.track(gc)
		r.Faults++
		want++ // the server did its work
		if code, rep, out := check(e, dir); code != 1 || rep.State != "held" || !p.Alive() {
			r.fail("iteration %d: the helper %d of the server's tree lives: check exit %d, state %s, wrapper alive %v; want 1, held by the wrapper: %s",
				i, gc, code, rep.State, p.Alive(), tail(out))
		}
		p.Kill()
		rec := k.record(dir)
		if rec == nil {
			testutil.KillPID(gc)
			continue
		}
		if env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", gc)); strings.Contains(string(env), interlock.TokenEnv+"=") {
			r.fail("iteration %d: harness error: the helper %d carries the token", i, gc)
		}
		if d, err := shm.Stat(rec.ShmID); err != nil {
			r.fail("iteration %d: harness error: segment %d of the record is gone while the helper %d is attached: %v", i, rec.ShmID, gc, err)
		} else {
			segNote = fmt.Sprintf(", segment after the wrapper was killed: key %s nattch %d marked for removal %v",
				pidfile.FormatKey(d.Key), d.Nattch, d.Removed)
		}

		before := k.pidfile(dir)
		code, out := e.Dirlockd([]string{e.WorkerEnv()}, work...)
		switch {
		case code == 0:
			r.fail("iteration %d: a new holder started while the helper %d is still attached to segment %d (the previous record's shm_id, removed at release): %s",
				i, gc, rec.ShmID, tail(out))
			want++
		case code != exitcode.Orphans || !mentions(out, gc):
			r.fail("iteration %d: a starter while the attached helper %d lives: exit %d, want 76 naming it: %s", i, gc, code, tail(out))
		}
		if code, rep, out := check(e, dir); code != 2 || rep.State != "orphans" || !slices.Equal(rep.Orphans, []int{gc}) {
			r.fail("iteration %d: check with the helper %d attached: exit %d, state %s, orphans %v; want 2, orphans [%d]: %s",
				i, gc, code, rep.State, rep.Orphans, gc, tail(out))
		}
		if after := k.pidfile(dir); code != 0 && string(after) != string(before) {
			r.fail("iteration %d: a refused starter changed the pidfile:\nbefore %q\nafter  %q", i, before, after)
		}

		if !testutil.KillPID(gc) {
			r.fail("iteration %d: the helper %d survived SIGKILL", i, gc)
		}
		tKill := time.Now()
		if code, out := e.Dirlockd([]string{e.WorkerEnv()}, work...); code != 0 {
			r.fail("iteration %d: the run after the helper died exited %d: %s", i, code, tail(out))
			continue
		}
		// The killed wrapper never removed its segment; the next start,
		// finding it unattached, must have.
		if _, err := shm.Stat(rec.ShmID); err == nil {
			r.fail("iteration %d: segment %d of the killed wrapper still exists after the next run", i, rec.ShmID)
		}
		k.live(time.Since(tKill))
		want++
	}
	k.finish(dir)
	return verify(w, r, want, segNote+k.notes())
}
