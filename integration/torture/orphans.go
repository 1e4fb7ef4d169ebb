package torture

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/proc"
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

// Identities: PID reuse and PID/IPC namespaces.
func Identities() []Scenario {
	return []Scenario{
		{Name: "identity: stale record naming live unrelated PIDs", Run: identityLivePIDs},
		{Name: "identity: PID/IPC namespace twins race", Run: identityNamespaceTwins},
	}
}

// orphansInherited: the server keeps the inherited locked descriptor, the
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
		if ok && !p.waitOutput(ready, 10*time.Second) {
			ok = false
		}
		if !ok {
			r.fail("iteration %d: the holder never came up: %s", i, tail(p.output()))
			k.killTree(p.pid())
			continue
		}
		child := rep.ChildPID
		k.track(child)
		token := k.token(dir)
		syscall.Kill(p.pid(), syscall.SIGKILL)
		r.Faults++
		if _, ok := p.wait(10 * time.Second); !ok {
			r.fail("iteration %d: the wrapper %d survived SIGKILL", i, p.pid())
		}

		before := k.pidfile(dir)
		t0 := time.Now()
		code, out := e.Dirlockd([]string{e.WorkerEnv()}, work...)
		refusal = max(refusal, time.Since(t0))
		if code != exitOrphans || !mentions(out, child) {
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

		if !Kill(child) {
			r.fail("iteration %d: the server %d survived SIGKILL", i, child)
		}
		tKill := time.Now()
		if err := w.Killed(token); err != nil {
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
		if !p.waitOutput("the command exited", 20*time.Second) {
			r.fail("iteration %d: the server did not exit: %s", i, tail(p.output()))
			k.killTree(p.pid())
			continue
		}
		m := gcRe.FindStringSubmatch(p.output())
		if m == nil {
			r.fail("iteration %d: the server started no attached helper: %s", i, tail(p.output()))
			k.killTree(p.pid())
			continue
		}
		gc, _ := strconv.Atoi(m[1])
		k.track(gc)
		r.Faults++
		want++ // the server did its work
		if code, rep, out := check(e, dir); code != 1 || rep.State != "held" || !p.alive() {
			r.fail("iteration %d: the helper %d of the server's tree lives: check exit %d, state %s, wrapper alive %v; want 1, held by the wrapper: %s",
				i, gc, code, rep.State, p.alive(), tail(out))
		}
		p.kill()
		rec := k.record(dir)
		if rec == nil {
			Kill(gc)
			continue
		}
		if env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", gc)); strings.Contains(string(env), interlock.TokenEnv+"=") {
			r.fail("iteration %d: harness error: the helper %d carries the token", i, gc)
		}
		if d, err := shm.Stat(rec.ShmID); err != nil {
			r.fail("iteration %d: harness error: segment %d of the record is gone while the helper %d is attached: %v", i, rec.ShmID, gc, err)
		} else {
			segNote = fmt.Sprintf(", segment after the wrapper was killed: key 0x%08x nattch %d marked for removal %v",
				uint32(d.Perm.Key), d.Nattch, shm.MarkedForRemoval(d))
		}

		before := k.pidfile(dir)
		code, out := e.Dirlockd([]string{e.WorkerEnv()}, work...)
		switch {
		case code == 0:
			r.fail("iteration %d: a new holder started while the helper %d is still attached to segment %d (the previous record's shm_id, removed at release): %s",
				i, gc, rec.ShmID, tail(out))
			want++
		case code != exitOrphans || !mentions(out, gc):
			r.fail("iteration %d: a starter while the attached helper %d lives: exit %d, want 76 naming it: %s", i, gc, code, tail(out))
		}
		if code, rep, out := check(e, dir); code != 2 || rep.State != "orphans" || !slices.Equal(rep.Orphans, []int{gc}) {
			r.fail("iteration %d: check with the helper %d attached: exit %d, state %s, orphans %v; want 2, orphans [%d]: %s",
				i, gc, code, rep.State, rep.Orphans, gc, tail(out))
		}
		if after := k.pidfile(dir); code != 0 && string(after) != string(before) {
			r.fail("iteration %d: a refused starter changed the pidfile:\nbefore %q\nafter  %q", i, before, after)
		}

		if !Kill(gc) {
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

// identityLivePIDs plants stale records (lock free, status ready) naming live
// processes that have nothing to do with the directory, with their true start
// times: PID 1, the harness, the harness's parent, an unrelated sleep. stop
// must signal none of them, check must call the directory stale, and run must
// take it over.
func identityLivePIDs(e *Env) Result {
	var r Result
	k := newKit(e, &r)
	defer k.cleanup()
	dir, w := e.DataDir(), e.NewWitness()
	work := workArgs(e, dir, w)
	want := 0

	sleeper, err := k.start("sleep", []string{"60"})
	if err != nil {
		r.fail("start sleep: %v", err)
		return r
	}
	// A signal meant for a holder must not reach us.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	targets := []struct {
		pid  int
		what string
	}{{1, "PID 1"}, {os.Getpid(), "the harness"}, {os.Getppid(), "the harness's parent"}, {sleeper.pid(), "an unrelated sleep"}}

	for round := range max(2, e.Scale.Iterations/8) {
		for _, t := range targets {
			if code, out := e.Dirlockd([]string{e.WorkerEnv()}, work...); code != 0 {
				r.fail("round %d, %s: run: exit %d: %s", round, t.what, code, tail(out))
				continue
			}
			want++
			rec := k.record(dir)
			st, err := proc.StartTime(t.pid)
			if rec == nil || err != nil {
				r.fail("round %d, %s: cannot plant the record: %v", round, t.what, err)
				continue
			}
			rec.PID, rec.PIDStart, rec.Status = t.pid, st, pidfile.Ready
			if rec.Extra == nil {
				rec.Extra = map[string]string{}
			}
			rec.Extra["child_pid"] = strconv.Itoa(t.pid)
			planted := rec.Marshal()
			if err := os.WriteFile(pidfilePath(dir), planted, 0o600); err != nil {
				r.fail("round %d, %s: write the record: %v", round, t.what, err)
				continue
			}
			r.Faults++

			if code, out := e.Dirlockd(nil, "stop", "-D", dir, "--timeout", "5s"); code != 0 {
				r.fail("round %d, %s (PID %d): stop on a stale record: exit %d, want 0: %s", round, t.what, t.pid, code, tail(out))
			}
			if code, rep, out := check(e, dir); code != 0 || rep.State != "stale" {
				r.fail("round %d, %s (PID %d): check: exit %d, state %s; want 0, stale: %s", round, t.what, t.pid, code, rep.State, tail(out))
			}
			if b := k.pidfile(dir); string(b) != string(planted) {
				r.fail("round %d, %s: stop or check changed the pidfile:\nplanted %q\nnow     %q", round, t.what, planted, b)
			}
			select {
			case s := <-sigs:
				r.fail("round %d, %s: the harness received %v", round, t.what, s)
			default:
			}
			if !sleeper.alive() || !proc.Alive(sleeper.pid(), k.procs[sleeper.pid()]) {
				r.fail("round %d, %s: the unrelated sleep %d died: %v", round, t.what, sleeper.pid(), sleeper.cmd.ProcessState)
			}
			t0 := time.Now()
			if code, out := e.Dirlockd([]string{e.WorkerEnv()}, work...); code != 0 {
				r.fail("round %d, %s (PID %d): run over the stale record: exit %d: %s", round, t.what, t.pid, code, tail(out))
				continue
			}
			k.live(time.Since(t0))
			want++
		}
	}
	sleeper.cmd.Process.Signal(syscall.SIGKILL)
	if _, ok := sleeper.wait(10 * time.Second); ok {
		if ws, ok := sleeper.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			r.fail("the unrelated sleep ended with %v, not by our SIGKILL", sleeper.cmd.ProcessState)
		}
	}
	k.finish(dir)
	return verify(w, r, want, k.notes())
}

// identityNamespaceTwins starts, at the same moment, one holder on the host
// and one in another PID namespace, IPC namespace, or both, on one data
// directory. Only the file lock can see across: exactly one may hold at a
// time (the witness), and each must either get in (0) or be refused as held
// (75), never anything else.
func identityNamespaceTwins(e *Env) Result {
	var r Result
	k := newKit(e, &r)
	defer k.cleanup()
	w := e.NewWitness()
	variants := []struct {
		name   string
		prefix []string
	}{
		{"pid", []string{"--pid", "--fork", "--kill-child", "--mount-proc"}},
		{"ipc", []string{"--ipc"}},
		{"pid+ipc", []string{"--pid", "--ipc", "--fork", "--kill-child", "--mount-proc"}},
	}
	rounds := max(3, e.Scale.Iterations/4)
	want, close5, contended, hostWon, sequential := 0, 0, 0, 0, 0
	var dirs []string
	for _, v := range variants {
		dir := e.DataDir()
		dirs = append(dirs, dir)
		run := runArgs(dir, nil, e.WorkerArgs("work", w.Dir, "50ms")...)
		for round := range rounds {
			host := exec.Command(e.Bin, run...)
			ns := exec.Command("unshare", append(append([]string{}, v.prefix...), append([]string{e.Bin}, run...)...)...)
			cmds := []*exec.Cmd{host, ns}
			outs := make([]strings.Builder, 2)
			for j, c := range cmds {
				c.Env = append(os.Environ(), e.WorkerEnv())
				c.Stdout, c.Stderr = &outs[j], &outs[j]
			}
			// Random order, and the second launched 0 to 6 ms after the
			// first, to sweep the race window.
			first := e.Rand.IntN(2)
			delay := time.Duration(e.Rand.IntN(7)) * time.Millisecond
			var started [2]time.Time
			var wg sync.WaitGroup
			codes := [2]int{-2, -2}
			for n, j := range []int{first, 1 - first} {
				if n == 1 {
					time.Sleep(delay)
				}
				if err := cmds[j].Start(); err != nil {
					r.fail("%s round %d: start: %v", v.name, round, err)
					continue
				}
				started[j] = time.Now()
				k.track(cmds[j].Process.Pid)
				wg.Add(1)
				go func() {
					defer wg.Done()
					cmds[j].Wait()
					codes[j] = cmds[j].ProcessState.ExitCode()
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				r.fail("%s round %d: a twin did not finish within 30s", v.name, round)
				for _, c := range cmds {
					if c.Process != nil {
						k.killTree(c.Process.Pid)
					}
				}
				<-done
			}
			if d := started[0].Sub(started[1]); d.Abs() <= 5*time.Millisecond {
				close5++
			}
			for j, c := range codes {
				if c != 0 && c != exitHeld {
					r.fail("%s round %d: the %s twin exited %d, want 0 or 75: %s", v.name, round, []string{"host", "namespaced"}[j], c, tail(outs[j].String()))
				}
				if c == 0 {
					want++
				}
			}
			r.Faults++
			switch {
			case codes[0] == 0 && codes[1] == 0:
				sequential++
			case codes[0] == 0 || codes[1] == 0:
				contended++
				if codes[0] == 0 {
					hostWon++
				}
			case codes[0] == exitHeld && codes[1] == exitHeld:
				r.fail("%s round %d: both twins were refused as held: nobody got in", v.name, round)
			}
		}
	}
	k.finish(dirs...)
	return verify(w, r, want, fmt.Sprintf(", %d rounds × 3 namespace kinds: %d launched within 5 ms, %d contended (0+75; host won %d), %d one after the other (0+0)",
		rounds, close5, contended, hostWon, sequential))
}

// ---- worker modes ----

// workerCloseFDsSleep is worker mode "closefds-sleep [WITNESS]": close the
// inherited locked descriptor (fd 3), enter the witness if given, print
// "sleeping", and sleep until killed. Only DIRLOCKD_TOKEN links it to the
// directory.
func workerCloseFDsSleep(args []string) int {
	if err := syscall.Close(3); err != nil {
		fmt.Fprintln(os.Stderr, "torture worker: close fd 3:", err)
		return 1
	}
	if len(args) > 0 {
		if err := (Witness{Dir: args[0]}).event("enter", os.Getenv(interlock.TokenEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "torture worker:", err)
			return 1
		}
	}
	fmt.Println("sleeping")
	for {
		time.Sleep(time.Hour)
	}
}

// workerSpawnAttacher is worker mode "spawn-attacher WITNESS HOLD": do the
// witness work, then start a helper in mode "attach-sleep $DIRLOCKD_SHM_ID"
// with neither the locked descriptor nor DIRLOCKD_TOKEN, wait until it is
// attached, print "grandchild PID", and exit 0.
func workerSpawnAttacher(args []string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "torture worker:", err)
		return 1
	}
	hold, _ := time.ParseDuration(args[1])
	if err := (Witness{Dir: args[0]}).Work(os.Getenv(interlock.TokenEnv), hold); err != nil {
		return fail(err)
	}
	// The inherited lock descriptor has no close-on-exec flag: the helper
	// must not inherit it.
	syscall.CloseOnExec(3)
	exe, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	cmd := exec.Command(exe, "attach-sleep", os.Getenv("DIRLOCKD_SHM_ID"))
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, interlock.TokenEnv+"=") })
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "attached" {
		cmd.Process.Kill()
		cmd.Wait()
		return fail(fmt.Errorf("helper: %q, %v", line, err))
	}
	fmt.Printf("grandchild %d\n", cmd.Process.Pid)
	return 0
}

// workerAttachSleep is worker mode "attach-sleep ID": attach SysV segment ID
// read-write, print "attached", and sleep until killed. It refuses to run
// with a descriptor of a pidfile open.
func workerAttachSleep(args []string) int {
	fail := func(err error) int {
		fmt.Println("error:", err)
		return 1
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if t, _ := os.Readlink("/proc/self/fd/" + fd.Name()); strings.HasSuffix(t, "/"+pidfile.DefaultName) {
			return fail(fmt.Errorf("fd %s is the pidfile %s", fd.Name(), t))
		}
	}
	id, err := strconv.Atoi(args[0])
	if err != nil {
		return fail(err)
	}
	if _, err := unix.SysvShmAttach(id, 0, 0); err != nil {
		return fail(fmt.Errorf("shmat(%d): %w", id, err))
	}
	fmt.Println("attached")
	for {
		time.Sleep(time.Hour)
	}
}
