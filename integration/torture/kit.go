package torture

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// The kit every scenario family shares: processes in the background, check
// reports, pidfile reads, segment checks, violations.

// fail records a broken invariant.
func (r *Result) fail(format string, a ...any) {
	r.Violations = append(r.Violations, fmt.Sprintf(format, a...))
}

// check runs "dirlockd check --json -D dir" and returns its exit status, its
// report (State "unparsable: ..." when there is none) and its whole output.
func check(e *Env, dir string) (int, testutil.Report, string) {
	code, out := e.Dirlockd(nil, "check", "--json", "-D", dir)
	rep, err := testutil.ParseReport(out)
	if err != nil {
		rep.State = "unparsable: " + err.Error()
	}
	return code, rep, out
}

// start starts name with args in the background, with env added to ours,
// its output in files under the scratch directory.
func start(e *Env, name string, args []string, env ...string) (*testutil.Proc, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	return testutil.Launch(cmd, e.Work)
}

// waitHeld polls check until dir is held by p with a server started, or p
// exits, or the time runs out.
func waitHeld(e *Env, dir string, p *testutil.Proc, timeout time.Duration) (testutil.Report, error) {
	deadline := time.Now().Add(timeout)
	for {
		code, rep, out := check(e, dir)
		if code == exitcode.CheckHeld && rep.State == "held" && rep.ChildPID > 0 && rep.PID == p.PID() {
			return rep, nil
		}
		if !p.Alive() || time.Now().After(deadline) {
			return rep, fmt.Errorf("not held (wrapper alive %v; check said %q); wrapper output:\n%s", p.Alive(), strings.TrimSpace(out), p.Output())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runArgs is "run -D dir flags... -- argv...".
func runArgs(dir string, flags []string, argv ...string) []string {
	args := append(append([]string{"run", "-D", dir}, flags...), "--")
	return append(args, argv...)
}

// workArgs is "run -D dir [flags] -- worker work W HOLD".
func workArgs(e *Env, dir string, w Witness, flags ...string) []string {
	return runArgs(dir, flags, e.WorkerArgs("work", w.Dir, e.Scale.Hold.String())...)
}

func pidfilePath(dir string) string { return filepath.Join(dir, pidfile.DefaultName) }

// readPidfile reads and parses the pidfile of dir. b is nil exactly when the
// file could not be read; err is then the read error, else the parse error.
func readPidfile(dir string) (rec *pidfile.Record, b []byte, err error) {
	b, err = os.ReadFile(pidfilePath(dir))
	if err != nil {
		return nil, nil, err
	}
	rec, err = pidfile.Parse(b)
	return rec, b, err
}

// noSegments checks that no SysV segment names the directory with identity
// id (which outlives the directory itself).
func noSegments(r *Result, what string, id shm.Identity) {
	segs, err := shm.Scan(id, shm.Owners{0}, false)
	if err != nil {
		r.fail("%s: segment scan: %v", what, err)
	}
	for _, a := range segs {
		r.fail("%s: segment %d (key %s, %s, %d attached) of the data directory left behind", what, a.ID, pidfile.FormatKey(a.Key), a.State, a.Nattch)
	}
}

// noSegmentsDir is noSegments for an existing directory.
func noSegmentsDir(r *Result, what, dir string) {
	id, err := shm.DirIdentity(dir)
	if err != nil {
		r.fail("%s: %v", what, err)
		return
	}
	noSegments(r, what, id)
}

// kit carries a scenario's result, the processes it started (to kill them
// by PID at the end) and its liveness figures.
type kit struct {
	e     *Env
	r     *Result
	procs map[int]uint64 // PID -> start time, of every process we started
	order []int
	lives []time.Duration
}

func newKit(e *Env, r *Result) *kit {
	return &kit{e: e, r: r, procs: map[int]uint64{}}
}

// track remembers pid, a process we started directly or through a wrapper,
// with its start time, so that cleanup never hits a reused PID.
func (k *kit) track(pid int) {
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

// start is start, for a tracked process.
func (k *kit) start(name string, args []string, env ...string) (*testutil.Proc, error) {
	p, err := start(k.e, name, args, env...)
	if err == nil {
		k.track(p.PID())
	}
	return p, err
}

// cleanup SIGKILLs every tracked process that is still alive (same start
// time), newest first, and waits for each to die.
func (k *kit) cleanup() {
	for _, pid := range slices.Backward(k.order) {
		if proc.Alive(pid, k.procs[pid]) && !testutil.KillPID(pid) {
			k.r.fail("cleanup: PID %d survived SIGKILL", pid)
		}
	}
}

// killTree SIGKILLs pid and the descendants we can still find, all of them
// processes we started.
func (k *kit) killTree(pid int) {
	for _, d := range testutil.Descendants(pid) {
		k.track(d)
	}
	k.track(pid)
	syscall.Kill(pid, syscall.SIGKILL)
	for _, d := range testutil.Descendants(pid) {
		testutil.KillPID(d)
	}
	testutil.WaitDead(pid, 10*time.Second)
}

// live records how long a next holder took to get in after a crash.
func (k *kit) live(d time.Duration) { k.lives = append(k.lives, d) }

// notes reports the liveness figures: after every crash, how long until a
// next holder got in.
func (k *kit) notes() string {
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

// pidfile reads the pidfile of dir (nil if there is none), with a violation
// if it cannot.
func (k *kit) pidfile(dir string) []byte {
	_, b, err := readPidfile(dir)
	if b == nil && !errors.Is(err, fs.ErrNotExist) {
		k.r.fail("read the pidfile: %v", err)
	}
	return b
}

// record parses the pidfile; nil (and a violation) if it cannot.
func (k *kit) record(dir string) *pidfile.Record {
	rec, err := pidfile.Parse(k.pidfile(dir))
	if err != nil {
		k.r.fail("pidfile of %s: %v", dir, err)
		return nil
	}
	return rec
}

func (k *kit) token(dir string) string {
	if rec := k.record(dir); rec != nil {
		return rec.Token
	}
	return ""
}

func (k *kit) heartbeat(dir string) string {
	if rec := k.record(dir); rec != nil {
		return rec.Extra[testutil.RecordHeartbeat]
	}
	return ""
}

// finish checks the end state of dirs: check says it is safe to start (exit
// 0) and no segment of them is left; it first kills whatever we started that
// still lives.
func (k *kit) finish(dirs ...string) {
	k.cleanup()
	for _, dir := range dirs {
		if code, rep, out := check(k.e, dir); code != 0 {
			k.r.fail("at the end, dirlockd check -D %s: exit %d (%s): %s", dir, code, rep.State, tail(out))
		}
		noSegmentsDir(k.r, "at the end", dir)
	}
}

// mentions reports whether out mentions pid as a number of its own.
func mentions(out string, pid int) bool {
	return regexp.MustCompile(`\b` + strconv.Itoa(pid) + `\b`).MatchString(out)
}

// tornNote explains a refusal gone wrong when the pidfile the starter found
// was not a whole record.
func tornNote(b []byte) string {
	if _, err := pidfile.Parse(b); err != nil {
		return fmt.Sprintf(" (the pidfile the killed wrapper left is not a whole record: %v: %q)", err, b)
	}
	return ""
}

// tail shortens output for a violation message.
func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return strings.ReplaceAll(s, "\n", " | ")
}

// panicked reports whether output shows a Go panic or runtime crash.
func panicked(out string) bool {
	return strings.Contains(out, "panic") || strings.Contains(out, "goroutine ")
}

// failedCleanly says what is wrong with a failed start, or "": a
// non-zero exit status of its own (not a signal, not the harness's
// timeout), no crash, and a message containing every one of want.
func failedCleanly(code int, out string, want ...string) string {
	switch {
	case code == 0:
		return "exit 0, want a failure"
	case code < 0 || code >= 128:
		return fmt.Sprintf("exit %d: killed or crashed, want a clean failure", code)
	case panicked(out):
		return fmt.Sprintf("exit %d with a crash in the output", code)
	}
	low := strings.ToLower(out)
	for _, w := range want {
		if !strings.Contains(low, strings.ToLower(w)) {
			return fmt.Sprintf("exit %d, but the message does not say %q", code, w)
		}
	}
	return ""
}

// noHolders checks that nobody holds a lock on the pidfile at path, if it
// exists.
func noHolders(r *Result, what, path string) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return
	}
	if hs, err := proc.LockHolders(st.Dev, st.Ino); err != nil || len(hs) > 0 {
		r.fail("%s: processes %v (%v) still hold %s", what, hs, err, path)
	}
}

// reap kills, by PID, every process carrying token in its environment
// and returns how many there were.
func reap(token string) int {
	if token == "" {
		return 0
	}
	found, _ := proc.WithEnv(interlock.TokenEnv + "=" + token)
	delete(found, os.Getpid())
	for p := range found {
		testutil.KillPID(p)
	}
	return len(found)
}

// underHolder starts argv (a "dirlockd run", or a command that execs it) in
// the background and, once it holds dir, runs fn with check's report; fn
// returns the holder's token as soon as it knows it. Then it kills the
// wrapper and reaps, by that token, whatever of the holder is left: a
// violation, since the wrapper must have stopped its server. It reports false,
// with a violation, when the wrapper cannot start.
func underHolder(e *Env, r *Result, what, dir string, argv []string, fn func(w *testutil.Proc, rep testutil.Report) (token string)) bool {
	w, err := start(e, argv[0], argv[1:], e.WorkerEnv())
	if err != nil {
		r.fail("set-up: %v", err)
		return false
	}
	var token string
	defer func() {
		w.Kill()
		if n := reap(token); n > 0 {
			r.fail("%s: %d process(es) of the holder left behind (killed)", what, n)
		}
	}()
	rep, err := waitHeld(e, dir, w, 10*time.Second)
	if err != nil {
		r.fail("%s: %v", what, err)
		return true
	}
	token = fn(w, rep)
	return true
}

// codeCounts renders a count of exit statuses for the notes.
func codeCounts(codes map[int]int) string {
	var ks []int
	for k := range codes {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	var s []string
	for _, k := range ks {
		s = append(s, fmt.Sprintf("%d×%d", k, codes[k]))
	}
	return strings.Join(s, " ")
}
