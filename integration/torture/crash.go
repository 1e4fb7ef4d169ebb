package torture

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
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

// Exit codes of dirlockd run (cmd/dirlockd/main.go).
const (
	coExitHeld    = 75
	coExitOrphans = 76
)

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
	hold := e.Scale.Hold.String()
	work := k.runArgs(dir, nil, e.WorkerArgs("work", w.Dir, hold))
	// A first clean holder, so that the first crashes have a record to
	// keep intact.
	if code, out := e.Dirlockd([]string{e.WorkerEnv()}, work...); code != 0 {
		k.fail("first run: exit %d: %s", code, coTail(out))
	} else {
		want++
	}
	for rep := range reps {
		for step := interlock.StepOpened; step <= interlock.StepReleaseUnlocked; step++ {
			before := k.pidfile(dir)
			code, out := e.Dirlockd([]string{e.WorkerEnv(), fmt.Sprintf("%s=%d", interlock.FaultEnv, step)}, work...)
			r.Faults++
			if code != -1 {
				k.fail("rep %d step %d: dirlockd run exited %d, want death by SIGKILL (-1): %s", rep, step, code, coTail(out))
			}
			started := strings.Contains(out, "started the server")
			switch {
			case step <= interlock.StepRecordWritten && started:
				k.fail("rep %d step %d: the server was started by a wrapper killed during Acquire", rep, step)
			case step > interlock.StepRecordWritten && !started:
				k.fail("rep %d step %d: the server never ran before the fault in Release: %s", rep, step, coTail(out))
			case step > interlock.StepRecordWritten:
				want++
			}
			// Before step 6 writes the new record, a dying starter must
			// leave the previous holder's record as it was.
			if step < interlock.StepRecordWritten {
				if after := k.pidfile(dir); string(after) != string(before) {
					k.fail("rep %d step %d: a starter killed during Acquire changed the pidfile:\nbefore %q\nafter  %q", rep, step, before, after)
				}
			}
			t0 := time.Now()
			code, out = e.Dirlockd([]string{e.WorkerEnv()}, work...)
			if code != 0 {
				k.fail("rep %d step %d: the run after the crash exited %d: %s", rep, step, code, coTail(out))
				continue
			}
			k.live(time.Since(t0))
			want++
			// That run released cleanly: nothing of the crash may remain.
			k.noSegments(dir, fmt.Sprintf("rep %d step %d, after the next clean run", rep, step))
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
	hold := e.Scale.Hold.String()
	want, orphanChecks := 0, 0
	for i := range e.Scale.Iterations {
		p, err := k.start(e.Bin, k.runArgs(dir, nil, e.WorkerArgs("hold", w.Dir)), e.WorkerEnv())
		if err != nil {
			k.fail("iteration %d: start: %v", i, err)
			break
		}
		rep, ok := k.waitHeld(dir, p, 10*time.Second)
		if !ok {
			k.fail("iteration %d: the holder never came up: %s", i, coTail(p.output()))
			k.killTree(p.pid())
			continue
		}
		child := rep.ChildPID
		k.track(child)
		token := k.token(dir)
		time.Sleep(time.Duration(e.Rand.IntN(51)) * time.Millisecond)
		var tKill time.Time
		if i%2 == 1 {
			// Only the wrapper dies; the server keeps the lock.
			syscall.Kill(p.pid(), syscall.SIGKILL)
			r.Faults++
			if !p.waitDone(10 * time.Second) {
				k.fail("iteration %d: the wrapper %d survived SIGKILL", i, p.pid())
			}
			before := k.pidfile(dir)
			code, out := e.Dirlockd([]string{e.WorkerEnv()}, k.runArgs(dir, nil, e.WorkerArgs("work", w.Dir, hold))...)
			orphanChecks++
			if code != coExitOrphans || !coNames(out, child) {
				k.fail("iteration %d: a starter while the server %d of a killed wrapper lives: exit %d, want 76 naming it%s: %s",
					i, child, code, coTorn(before), coTail(out))
			}
			if after := k.pidfile(dir); string(after) != string(before) {
				k.fail("iteration %d: a refused starter changed the pidfile:\nbefore %q\nafter  %q", i, before, after)
			}
			if !Kill(child) {
				k.fail("iteration %d: the server %d survived SIGKILL", i, child)
			}
			r.Faults++
			tKill = time.Now()
		} else {
			syscall.Kill(p.pid(), syscall.SIGKILL)
			syscall.Kill(child, syscall.SIGKILL)
			tKill = time.Now()
			r.Faults++
			if !p.waitDone(10*time.Second) || !WaitDead(child, 10*time.Second) {
				k.fail("iteration %d: the wrapper %d or the server %d survived SIGKILL", i, p.pid(), child)
			}
		}
		// Both confirmed dead: only now may the next holder start.
		if err := w.Killed(token); err != nil {
			k.fail("witness: %v", err)
		}
		code, out := e.Dirlockd([]string{e.WorkerEnv()}, k.runArgs(dir, []string{"--wait", "10s"}, e.WorkerArgs("work", w.Dir, hold))...)
		if code != 0 {
			k.fail("iteration %d: the run after the kill exited %d: %s", i, code, coTail(out))
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
	hold := e.Scale.Hold.String()
	want, torn := 0, 0
	for i := range max(2, e.Scale.Iterations/8) {
		p, err := k.start(e.Bin, k.runArgs(dir, []string{"--recheck", "200ms"}, e.WorkerArgs("hold", w.Dir)), e.WorkerEnv())
		if err != nil {
			k.fail("iteration %d: start: %v", i, err)
			break
		}
		rep, ok := k.waitHeld(dir, p, 10*time.Second)
		if ok && !k.waitOutput(p, "holding", 10*time.Second) {
			ok = false
		}
		if !ok {
			k.fail("iteration %d: the holder never came up: %s", i, coTail(p.output()))
			k.killTree(p.pid())
			continue
		}
		k.track(rep.ChildPID)
		// Let one recheck pass so that there is a heartbeat to compare.
		time.Sleep(300 * time.Millisecond)
		beat := k.heartbeat(dir)

		// A stop that lands inside a heartbeat rewrite (between its write
		// and its truncate) freezes a torn record, which the holder itself
		// repairs once continued: stop again until the record is whole, so
		// that the byte comparison below judges only the contender.
		var before []byte
		var stopped time.Time
		for try := 0; ; try++ {
			stopped = time.Now()
			syscall.Kill(p.pid(), syscall.SIGSTOP)
			if before = k.pidfile(dir); try == 20 {
				break
			}
			if _, err := pidfile.Parse(before); err == nil {
				break
			}
			torn++
			syscall.Kill(p.pid(), syscall.SIGCONT)
			time.Sleep(20 * time.Millisecond)
		}
		r.Faults++
		code, out := e.Dirlockd([]string{e.WorkerEnv()}, k.runArgs(dir, nil, e.WorkerArgs("work", w.Dir, hold))...)
		if code != coExitHeld {
			k.fail("iteration %d: a contender while the holder is stopped: exit %d, want 75: %s", i, code, coTail(out))
		}
		if after := k.pidfile(dir); string(after) != string(before) {
			k.fail("iteration %d: a refused contender (or a stopped holder) changed the pidfile:\nbefore %q\nafter  %q", i, before, after)
		}
		time.Sleep(time.Until(stopped.Add(time.Second)))
		syscall.Kill(p.pid(), syscall.SIGCONT)

		// Three recheck intervals: time for it to notice anything.
		time.Sleep(700 * time.Millisecond)
		if p.exited() {
			k.fail("iteration %d: the wrapper exited after SIGCONT (it must not think it lost the lock): %s", i, coTail(p.output()))
		} else if code, rep, out := k.check(dir); code != 1 || rep.State != "held" || rep.PID != p.pid() {
			k.fail("iteration %d: after SIGCONT check says exit %d state %s pid %d, want held by the wrapper %d: %s", i, code, rep.State, rep.PID, p.pid(), out)
		} else if hb := k.heartbeat(dir); hb == "" || hb == beat {
			k.fail("iteration %d: no heartbeat after SIGCONT (before the stop %q, now %q): the recheck did not pass", i, beat, hb)
		}
		if strings.Contains(p.output(), "interlock is lost") {
			k.fail("iteration %d: the wrapper reported the interlock lost after SIGSTOP: %s", i, coTail(p.output()))
		}
		if code, out := e.Dirlockd(nil, "stop", "-D", dir, "--timeout", "10s"); code != 0 {
			k.fail("iteration %d: dirlockd stop: exit %d: %s", i, code, coTail(out))
		}
		if !p.waitDone(10 * time.Second) {
			k.fail("iteration %d: the wrapper did not exit after stop", i)
			k.killTree(p.pid())
			continue
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			k.fail("iteration %d: the wrapper exited %d after a clean stop, want 0: %s", i, code, coTail(p.output()))
		} else {
			want++
		}
	}
	// A last plain run: the directory must be free at once.
	t0 := time.Now()
	if code, out := e.Dirlockd([]string{e.WorkerEnv()}, k.runArgs(dir, nil, e.WorkerArgs("work", w.Dir, hold))...); code != 0 {
		k.fail("final run: exit %d: %s", code, coTail(out))
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

// workerHold is worker mode "hold WITNESS": enter the witness with
// $DIRLOCKD_TOKEN, print "holding", and wait; on SIGTERM finish the work (the
// counter) and exit 0, as a server shutting down cleanly does.
func workerHold(args []string) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	w, tok := Witness{Dir: args[0]}, os.Getenv(interlock.TokenEnv)
	if err := w.event("enter", tok); err != nil {
		fmt.Fprintln(os.Stderr, "torture worker:", err)
		return 1
	}
	fmt.Println("holding")
	<-term
	if err := w.finishWork(tok); err != nil {
		fmt.Fprintln(os.Stderr, "torture worker:", err)
		return 1
	}
	return 0
}

// finishWork is the second half of Work: increment the counter and announce the
// exit, for holders that entered earlier.
func (w Witness) finishWork(token string) error {
	b, err := os.ReadFile(w.counterPath())
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("counter: %w", err)
	}
	if err := os.WriteFile(w.counterPath(), []byte(strconv.Itoa(n+1)+"\n"), 0o600); err != nil {
		return err
	}
	return w.event("exit", token)
}

// ---- the kit the crash, orphan and identity scenarios share ----

// coKit carries a scenario's result, the processes it started (to kill them
// by PID at the end) and its liveness figures.
type coKit struct {
	e     *Env
	r     *Result
	procs map[int]uint64 // PID -> start time, of every process we started
	order []int
	lives []time.Duration
}

func newKit(e *Env, r *Result) *coKit {
	return &coKit{e: e, r: r, procs: map[int]uint64{}}
}

func (k *coKit) fail(format string, a ...any) {
	k.r.Violations = append(k.r.Violations, fmt.Sprintf(format, a...))
}

// track remembers pid, a process we started directly or through a wrapper,
// with its start time, so that cleanup never hits a reused PID.
func (k *coKit) track(pid int) {
	if pid <= 0 {
		return
	}
	if _, ok := k.procs[pid]; ok {
		return
	}
	if st, err := proc.StartTime(pid); err == nil {
		k.procs[pid] = st
		k.order = append(k.order, pid)
	}
}

// cleanup SIGKILLs every tracked process that is still alive (same start
// time), newest first, and waits for each to die.
func (k *coKit) cleanup() {
	for _, pid := range slices.Backward(k.order) {
		if proc.Alive(pid, k.procs[pid]) && !Kill(pid) {
			k.fail("cleanup: PID %d survived SIGKILL", pid)
		}
	}
}

// killTree SIGKILLs pid and the descendants we can still find, all of them
// processes we started.
func (k *coKit) killTree(pid int) {
	for _, d := range coDescendants(pid) {
		k.track(d)
	}
	k.track(pid)
	syscall.Kill(pid, syscall.SIGKILL)
	for _, d := range coDescendants(pid) {
		Kill(d)
	}
	WaitDead(pid, 10*time.Second)
}

// coDescendants lists pid's descendants, children first.
func coDescendants(pid int) []int {
	var out []int
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(b)) {
		if c, err := strconv.Atoi(f); err == nil {
			out = append(out, c)
			out = append(out, coDescendants(c)...)
		}
	}
	return out
}

// live records how long a next holder took to get in after a crash.
func (k *coKit) live(d time.Duration) { k.lives = append(k.lives, d) }

// notes reports the liveness figures: after every crash, how long until a
// next holder got in.
func (k *coKit) notes() string {
	if len(k.lives) == 0 {
		return ""
	}
	var sum, top time.Duration
	for _, d := range k.lives {
		sum += d
		top = max(top, d)
	}
	return fmt.Sprintf(", next holder in: max %v, mean %v (n=%d)", top.Round(time.Millisecond),
		(sum / time.Duration(len(k.lives))).Round(time.Millisecond), len(k.lives))
}

// runArgs is "run -D dir flags... -- argv...".
func (k *coKit) runArgs(dir string, flags []string, argv []string) []string {
	args := append(append([]string{"run", "-D", dir}, flags...), "--")
	return append(args, argv...)
}

// coProc is a process started in the background, its stdout and stderr in a
// file (a pipe would keep cmd.Wait waiting for every process sharing it).
type coProc struct {
	cmd  *exec.Cmd
	out  string
	done chan struct{}
}

func (k *coKit) start(name string, args []string, env ...string) (*coProc, error) {
	f, err := os.CreateTemp(k.e.Work, "out-*")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	k.track(cmd.Process.Pid)
	p := &coProc{cmd: cmd, out: f.Name(), done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *coProc) pid() int { return p.cmd.Process.Pid }

func (p *coProc) output() string {
	b, _ := os.ReadFile(p.out)
	return string(b)
}

func (p *coProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitDone waits for the process to exit (and be reaped).
func (p *coProc) waitDone(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// waitOutput waits until p's output contains s.
func (k *coKit) waitOutput(p *coProc, s string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !strings.Contains(p.output(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// coReport is a line of "dirlockd check --json".
type coReport struct {
	State    string `json:"state"`
	PID      int    `json:"pid"`
	ChildPID int    `json:"child_pid"`
	Status   string `json:"status"`
	Holders  []int  `json:"holders"`
	Orphans  []int  `json:"orphans"`
	Reason   string `json:"reason"`
}

// check runs "dirlockd check --json -D dir".
func (k *coKit) check(dir string) (int, coReport, string) {
	code, out := k.e.Dirlockd(nil, "check", "--json", "-D", dir)
	var rep coReport
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		rep.State = "unparsable: " + err.Error()
	}
	return code, rep, out
}

// waitHeld polls check until the directory is held with a server started,
// or p exits, or the time runs out.
func (k *coKit) waitHeld(dir string, p *coProc, d time.Duration) (coReport, bool) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if code, rep, _ := k.check(dir); code == 1 && rep.State == "held" && rep.ChildPID > 0 && rep.PID == p.pid() {
			return rep, true
		}
		if p.exited() {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return coReport{}, false
}

func (k *coKit) pidfilePath(dir string) string { return filepath.Join(dir, pidfile.DefaultName) }

func (k *coKit) pidfile(dir string) []byte {
	b, err := os.ReadFile(k.pidfilePath(dir))
	if err != nil && !os.IsNotExist(err) {
		k.fail("read the pidfile: %v", err)
	}
	return b
}

// record parses the pidfile; nil (and a violation) if it cannot.
func (k *coKit) record(dir string) *pidfile.Record {
	rec, err := pidfile.Parse(k.pidfile(dir))
	if err != nil {
		k.fail("pidfile of %s: %v", dir, err)
		return nil
	}
	return rec
}

func (k *coKit) token(dir string) string {
	if rec := k.record(dir); rec != nil {
		return rec.Token
	}
	return ""
}

func (k *coKit) heartbeat(dir string) string {
	if rec := k.record(dir); rec != nil {
		return rec.Extra["heartbeat"]
	}
	return ""
}

// noSegments checks that no SysV segment names dir.
func (k *coKit) noSegments(dir, when string) {
	id, err := shm.DirIdentity(dir)
	if err != nil {
		k.fail("%s: %v", when, err)
		return
	}
	segs, err := shm.Scan(id, false)
	if err != nil {
		k.fail("%s: scan segments: %v", when, err)
		return
	}
	for _, a := range segs {
		k.fail("%s: segment %d (key 0x%08x) of the directory left, %s, %d attached", when, a.ID, uint32(a.Key), a.State, a.Nattch)
	}
}

// finish checks the end state of dir: check says it is safe to start (exit
// 0) and no segment of it is left; then kills whatever we started that still
// lives.
func (k *coKit) finish(dirs ...string) {
	k.cleanup()
	for _, dir := range dirs {
		if code, rep, out := k.check(dir); code != 0 {
			k.fail("at the end, dirlockd check -D %s: exit %d (%s): %s", dir, code, rep.State, coTail(out))
		}
		k.noSegments(dir, "at the end")
	}
}

// coNames reports whether out mentions pid as a number of its own.
func coNames(out string, pid int) bool {
	return regexp.MustCompile(`\b` + strconv.Itoa(pid) + `\b`).MatchString(out)
}

// coTorn explains a refusal gone wrong when the pidfile the starter found was
// not a whole record.
func coTorn(b []byte) string {
	if _, err := pidfile.Parse(b); err != nil {
		return fmt.Sprintf(" (the pidfile the killed wrapper left is not a whole record: %v: %q)", err, b)
	}
	return ""
}

// coTail shortens output for a violation message.
func coTail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return strings.ReplaceAll(s, "\n", " | ")
}
