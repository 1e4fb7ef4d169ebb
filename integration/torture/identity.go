package torture

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// Identities: PID reuse and PID/IPC namespaces.
func Identities() []Scenario {
	return []Scenario{
		{Name: "identity: stale record naming live unrelated PIDs", Run: identityLivePIDs},
		{Name: "identity: PID/IPC namespace twins race", Run: identityNamespaceTwins},
	}
}

// orphansInherited: the server keeps the inherited locked descriptor, the

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
	}{{1, "PID 1"}, {os.Getpid(), "the harness"}, {os.Getppid(), "the harness's parent"}, {sleeper.PID(), "an unrelated sleep"}}

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
			rec.Extra[testutil.RecordChildPID] = strconv.Itoa(t.pid)
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
			if !sleeper.Alive() || !proc.Alive(sleeper.PID(), k.procs[sleeper.PID()]) {
				r.fail("round %d, %s: the unrelated sleep %d died: %v", round, t.what, sleeper.PID(), sleeper.Cmd.ProcessState)
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
	sleeper.Cmd.Process.Signal(syscall.SIGKILL)
	if _, ok := sleeper.Exited(10 * time.Second); ok {
		if ws, ok := sleeper.Cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			r.fail("the unrelated sleep ended with %v, not by our SIGKILL", sleeper.Cmd.ProcessState)
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
				if c != 0 && c != exitcode.Held {
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
			case codes[0] == exitcode.Held && codes[1] == exitcode.Held:
				r.fail("%s round %d: both twins were refused as held: nobody got in", v.name, round)
			}
		}
	}
	k.finish(dirs...)
	return verify(w, r, want, fmt.Sprintf(", %d rounds × 3 namespace kinds: %d launched within 5 ms, %d contended (0+75; host won %d), %d one after the other (0+0)",
		rounds, close5, contended, hostWon, sequential))
}
