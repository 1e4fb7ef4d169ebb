// Package integration drives the dirlockd binary as users do: real
// processes, real signals, real namespaces.
package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dirlockd-bin")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "dirlockd")
	build := exec.Command("go", "build", "-o", bin, "../cmd/dirlockd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build dirlockd:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	testutil.Main(m, nil)
}

// run runs dirlockd to completion and returns its exit code and output.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("dirlockd %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// holder is a running "dirlockd hold".
type holder struct {
	*testutil.Proc
	stderr *bytes.Buffer
}

// startHold starts "dirlockd hold -D dir" (through prefix, e.g. unshare) and
// waits until it holds the directory.
func startHold(t *testing.T, dir string, prefix ...string) *holder {
	t.Helper()
	args := append(prefix, bin, "hold", "-D", dir)
	cmd := exec.Command(args[0], args[1:]...)
	h := &holder{stderr: new(bytes.Buffer)}
	cmd.Stderr = h.stderr
	h.Proc = testutil.Start(t, cmd)
	line, err := h.ReadLine(10 * time.Second)
	if err != nil || !strings.HasPrefix(line, "holding "+dir) {
		t.Fatalf("dirlockd hold: %q, %v; stderr: %s", line, err, h.stderr)
	}
	return h
}

// target is the dirlockd process itself: the child that unshare --fork
// started, or the process we started when nothing stands in between.
func (h *holder) target() int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", h.PID(), h.PID()))
	if f := strings.Fields(string(b)); len(f) > 0 {
		if pid, err := strconv.Atoi(f[0]); err == nil {
			return pid
		}
	}
	return h.PID()
}

// stop sends SIGTERM and expects a clean release.
func (h *holder) stop(t *testing.T) {
	t.Helper()
	syscall.Kill(h.target(), syscall.SIGTERM)
	if line, _ := h.ReadLine(10 * time.Second); !strings.HasPrefix(line, "released") {
		t.Errorf("after SIGTERM: %q; stderr: %s", line, h.stderr)
	}
	if code := h.Wait(); code != 0 {
		t.Errorf("dirlockd hold exited %d after SIGTERM; stderr: %s", code, h.stderr)
	}
}

func TestHoldConflictRelease(t *testing.T) {
	dir := testutil.DataDir(t)
	h := startHold(t, dir)
	code, _, stderr := run(t, "hold", "-D", dir)
	if code != 75 || !strings.Contains(stderr, fmt.Sprintf("held by PID %d", h.PID())) {
		t.Errorf("second hold: exit %d, stderr %q; want 75 naming PID %d", code, stderr, h.PID())
	}
	code, out, _ := run(t, "inspect", "-D", dir)
	if code != 75 || !strings.HasPrefix(out, "held:") {
		t.Errorf("inspect while held: exit %d, %q", code, out)
	}
	h.stop(t)
	code, out, _ = run(t, "inspect", "-D", dir)
	if code != 0 || !strings.HasPrefix(out, "free:") {
		t.Errorf("inspect after release: exit %d, %q", code, out)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "dirlockd.pid"))
	if first, _, _ := strings.Cut(string(b), "\n"); first != fmt.Sprint(h.PID()) || !strings.Contains(string(b), "status=stopped") {
		t.Errorf("pidfile after release:\n%s", b)
	}
}

func TestKilledHolderIsStaleThenTakenOver(t *testing.T) {
	dir := testutil.DataDir(t)
	h := startHold(t, dir)
	h.Kill()
	want := fmt.Sprintf("previous holder PID %d", h.PID())
	code, out, _ := run(t, "inspect", "-D", dir)
	if code != 0 || !strings.HasPrefix(out, "stale:") || !strings.Contains(out, want) || !strings.Contains(out, "did not shut down cleanly") {
		t.Errorf("inspect after SIGKILL: exit %d, %q", code, out)
	}
	h2 := startHold(t, dir)
	h2.stop(t)
	if !strings.Contains(h2.stderr.String(), want+" (started") || !strings.Contains(h2.stderr.String(), "did not shut down cleanly") {
		t.Errorf("new holder did not report the unclean predecessor; stderr: %s", h2.stderr)
	}
}

// TestNamespaceTwins: holders in other PID and IPC namespaces cannot be seen
// by PID or by segment; the file lock still excludes them. This is the case
// PostgreSQL's interlock misses.
func TestNamespaceTwins(t *testing.T) {
	for _, c := range []struct {
		name   string
		prefix []string
	}{
		{"pid", []string{"unshare", "--pid", "--fork", "--kill-child", "--mount-proc"}},
		{"ipc", []string{"unshare", "--ipc"}},
		{"pid+ipc", []string{"unshare", "--pid", "--ipc", "--fork", "--kill-child", "--mount-proc"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			// Inside the namespace first, contender on the host.
			h := startHold(t, dir, c.prefix...)
			code, _, stderr := run(t, "hold", "-D", dir)
			if code != 75 {
				t.Errorf("host contender against a %s-namespace holder: exit %d, %s", c.name, code, stderr)
			}
			h.stop(t)
			// Holder on the host, contender inside the namespace.
			h = startHold(t, dir)
			args := append(append([]string{}, c.prefix[1:]...), bin, "hold", "-D", dir)
			cmd := exec.Command(c.prefix[0], args...)
			out, err := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != 75 {
				t.Errorf("%s-namespace contender against a host holder: exit %d (%v), %s", c.name, code, err, out)
			}
			h.stop(t)
		})
	}
}

func TestUsageAndInvalid(t *testing.T) {
	dir := testutil.DataDir(t)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{}, 64, "Usage"},
		{[]string{"frobnicate"}, 64, `unknown command "frobnicate"`},
		{[]string{"hold"}, 64, "no data directory"},
		{[]string{"hold", "-D", dir, "--lock-method", "carrier-pigeon"}, 64, "unknown lock method"},
		{[]string{"hold", "-D", dir, "--wait", "soon"}, 64, "invalid argument"},
		{[]string{"inspect", "-D", dir, "extra"}, 64, `unexpected argument "extra"`},
		{[]string{"hold", "-D", dir + "/missing"}, 78, "install -d -m 0700"},
		{[]string{"hold", "--help"}, 0, "Example:"},
	} {
		code, out, stderr := run(t, c.args...)
		if code != c.code || !strings.Contains(out+stderr, c.want) {
			t.Errorf("dirlockd %v: exit %d, output %q; want %d mentioning %q", c.args, code, out+stderr, c.code, c.want)
		}
	}
}
