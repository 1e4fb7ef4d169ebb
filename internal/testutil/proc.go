package testutil

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/proc"
)

// Proc is a process a test started: a helper (the test binary re-executed),
// a dirlockd, a server. Its output goes either to a pipe read a line at a
// time (Start, StartHelper: a helper that talks to the test) or to two files
// (Launch, StartLogged: a process whose descendants may keep its output
// open, such as a "dirlockd run" whose server outlives it: a file needs no
// reader that would wait for all of them). Either way it is reaped in the
// background as soon as it exits, so Done, Alive and the waits can be asked
// at any time.
type Proc struct {
	Cmd *exec.Cmd
	// lines carries the process's output, a line at a time, from one
	// reader for its whole life: a line that a timed-out ReadLine stopped
	// waiting for is still the next one read.
	lines chan string
	in    io.WriteCloser
	// stdout and stderr are the output files of a launched process.
	stdout, stderr string
	done           chan struct{}
}

// Command prepares the test binary to run helper name with args.
func Command(name string, args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), HelperEnv+"="+name)
	cmd.Stderr = os.Stderr
	return cmd
}

// StartHelper starts the test binary as helper name with args, its stdout
// and stdin piped to the test. The process is killed (by its PID, which we
// started) and reaped when the test ends.
func StartHelper(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	return Start(t, Command(name, args...))
}

// Start starts cmd with its stdout and stdin piped to the test; the process
// is killed and reaped when the test ends.
func Start(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	// An os.Pipe, not cmd.StdoutPipe: Wait, which runs as soon as the
	// process exits, would close the latter under a reader that has not
	// read everything yet.
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		out.Close()
		t.Fatal(err)
	}
	p := &Proc{Cmd: cmd, lines: make(chan string, 64), in: in, done: make(chan struct{})}
	go func() {
		defer close(p.lines)
		defer out.Close()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	go p.reap()
	t.Cleanup(p.Kill)
	return p
}

// Launch starts cmd with its stdout and stderr in two new files in dir.
// The caller kills it (Kill) when done; StartLogged is Launch for a test.
func Launch(cmd *exec.Cmd, dir string) (*Proc, error) {
	var files [2]*os.File
	for i, name := range []string{"stdout-*", "stderr-*"} {
		f, err := os.CreateTemp(dir, name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		files[i] = f
	}
	cmd.Stdout, cmd.Stderr = files[0], files[1]
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, stdout: files[0].Name(), stderr: files[1].Name(), done: make(chan struct{})}
	go p.reap()
	return p, nil
}

// StartLogged is Launch into a temporary directory of the test; the
// process is killed and reaped when the test ends.
func StartLogged(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p, err := Launch(cmd, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

func (p *Proc) reap() {
	p.Cmd.Wait()
	close(p.done)
}

// PID returns the process's PID.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Alive reports whether the process has not exited yet.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// ExitCode is the process's exit code once Done (-1 if a signal killed it).
func (p *Proc) ExitCode() int {
	<-p.done
	return p.Cmd.ProcessState.ExitCode()
}

// Exited waits up to timeout for the process to exit, and returns its exit
// code (-1 if a signal killed it) and whether it exited in time.
func (p *Proc) Exited(timeout time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// WaitExit is Exited that fails the test when the process still runs after
// timeout.
func (p *Proc) WaitExit(t testing.TB, timeout time.Duration) int {
	t.Helper()
	code, ok := p.Exited(timeout)
	if !ok {
		t.Fatalf("%s (PID %d) did not exit within %v; stderr:\n%s", p.Cmd.Path, p.PID(), timeout, p.Stderr())
	}
	return code
}

// Wait closes the process's stdin (when piped), waits for it to exit, and
// returns its exit code (-1 when it was killed by a signal).
func (p *Proc) Wait() int {
	if p.in != nil {
		p.in.Close()
	}
	return p.ExitCode()
}

// Kill SIGKILLs the process and waits until it is reaped; killing one that
// has exited is harmless. Its PID is ours until it is reaped, so the signal
// cannot reach another process.
func (p *Proc) Kill() {
	if p.Alive() {
		p.Cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// Stdout is what a launched process wrote to its stdout so far.
func (p *Proc) Stdout() string { return readFile(p.stdout) }

// Stderr is what a launched process wrote to its stderr so far.
func (p *Proc) Stderr() string { return readFile(p.stderr) }

// Output is Stdout then Stderr.
func (p *Proc) Output() string { return p.Stdout() + p.Stderr() }

func readFile(path string) string {
	if path == "" {
		return ""
	}
	b, _ := os.ReadFile(path)
	return string(b)
}

// WaitOutput polls a launched process's output until it contains s, and
// reports whether it did within timeout.
func (p *Proc) WaitOutput(s string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Output(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Expect reads the helper's next line of output and fails the test unless it
// starts with prefix. It returns the rest of the line.
func (p *Proc) Expect(t testing.TB, prefix string) string {
	t.Helper()
	line, err := p.ReadLine(10 * time.Second)
	if err != nil {
		t.Fatalf("helper %d: waiting for %q: %v", p.PID(), prefix, err)
	}
	rest, ok := strings.CutPrefix(line, prefix)
	if !ok {
		t.Fatalf("helper %d: got %q, want a line starting with %q", p.PID(), line, prefix)
	}
	return strings.TrimSpace(rest)
}

// ReadLine reads the helper's next line of output, without the newline. It
// fails with io.EOF once the output is closed.
func (p *Proc) ReadLine(timeout time.Duration) (string, error) {
	select {
	case l, ok := <-p.lines:
		if !ok {
			return "", io.EOF
		}
		return l, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("no output within %v", timeout)
	}
}

// Send writes a line to the helper's stdin.
func (p *Proc) Send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(p.in, line+"\n"); err != nil {
		t.Fatalf("helper %d: send %q: %v", p.PID(), line, err)
	}
}

// Descendants lists the processes below pid, children of every thread,
// each after its own descendants: an order to kill a tree in that leaves
// no orphan to be reparented out of reach.
func Descendants(pid int) []int {
	var out []int
	for _, c := range proc.Children(pid) {
		out = append(append(out, Descendants(c)...), c)
	}
	return out
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	st, err := proc.ReadStat(pid)
	return err == nil && st.State != 'Z'
}

// Dead reports whether pid can no longer act: it is gone, or a zombie whose
// threads have all exited (a zombie leader can wait for threads still
// running).
func Dead(pid int) bool {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return true
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return st.State == 'Z' && len(tasks) <= 1
}

// WaitDead polls until pid is Dead, and reports whether it was within
// timeout.
func WaitDead(pid int, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); !Dead(pid); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// KillPID SIGKILLs pid, a process the test started (directly, or through a
// process it started and that has not reaped it), and reports whether it
// was Dead within 10 s.
func KillPID(pid int) bool {
	syscall.Kill(pid, syscall.SIGKILL)
	return WaitDead(pid, 10*time.Second)
}
