// Package testutil holds what the test suites share: re-executing the test
// binary as a helper process, data directories, and the check that no SysV
// segment leaks.
package testutil

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// HelperEnv names the helper a re-executed test binary runs. It must not look
// like one of dirlockd's own variables, which dirlockd run replaces: a helper
// that lost it would run the whole test suite again, recursively.
const HelperEnv = "DLTEST_HELPER"

// Helper is a function a re-executed test binary runs instead of the tests;
// its return value is the process's exit code.
type Helper func(args []string) int

// Main runs a package's tests, or one of its helpers when the binary was
// re-executed by StartHelper. Around the tests it checks that the set of SysV
// segments on the machine is the same after as before (run packages with
// go test -p 1 so that they do not see each other's).
func Main(m *testing.M, helpers map[string]Helper) {
	Dispatch(helpers)
	os.Exit(Run(m))
}

// Run runs the tests with the segment check of Main and returns the exit
// code, for a TestMain that has its own clean-up to do before it exits.
// Call Dispatch first.
func Run(m *testing.M) int {
	before, err := Segments()
	if err != nil {
		fmt.Fprintln(os.Stderr, "list SysV segments:", err)
		return 1
	}
	code := m.Run()
	after, err := Segments()
	if err != nil {
		fmt.Fprintln(os.Stderr, "list SysV segments:", err)
		return 1
	}
	if leaked := slices.DeleteFunc(after, func(id int) bool { return slices.Contains(before, id) }); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: tests leaked SysV segments (ipcs -m): ids %v\n", leaked)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Dispatch runs the helper a re-executed test binary was started for, and
// exits; it returns at once in the test process itself. A TestMain that does
// set-up work (building binaries) must call it first, or every helper would
// repeat that work.
func Dispatch(helpers map[string]Helper) {
	name := os.Getenv(HelperEnv)
	if name == "" {
		return
	}
	h, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
		os.Exit(2)
	}
	os.Exit(h(os.Args[1:]))
}

// Segments lists the ids of the SysV shared-memory segments in our IPC
// namespace.
func Segments() ([]int, error) {
	b, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return nil, err
	}
	var ids []int
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 2 {
			continue
		}
		id, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, fmt.Errorf("/proc/sysvipc/shm line %d: %v", i+1, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// DataDir makes an empty data directory, mode 0700, removed after the test.
func DataDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir() + "/data"
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// Proc is a running helper process.
type Proc struct {
	Cmd *exec.Cmd
	// lines carries the process's output, a line at a time, from one
	// reader for its whole life: a line that a timed-out ReadLine stopped
	// waiting for is still the next one read.
	lines chan string
	in    io.WriteCloser
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
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Proc{Cmd: cmd, lines: make(chan string, 64), in: in}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() { p.Kill() })
	return p
}

// PID returns the helper's PID.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

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

// Kill SIGKILLs the helper and reaps it; it returns once the process is
// gone. Killing one that has exited is harmless.
func (p *Proc) Kill() {
	if p.Cmd.ProcessState == nil {
		p.Cmd.Process.Signal(syscall.SIGKILL)
		p.Cmd.Wait()
	}
}

// Wait waits for the helper to exit and returns its exit code (-1 when it
// was killed by a signal).
func (p *Proc) Wait() int {
	p.in.Close()
	p.Cmd.Wait()
	return p.Cmd.ProcessState.ExitCode()
}

// Lines reads commands from stdin, one per line, for a helper.
func Lines() *bufio.Scanner { return bufio.NewScanner(os.Stdin) }
