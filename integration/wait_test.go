package integration

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// cliBackground starts the binary with args and returns a channel closed
// when it exits (read its stderr only then); the process is killed at the
// end of the test.
func cliBackground(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return cmd, stderr, done
}

// TestWaitReadyThenFree: the server listens a second after it starts, and
// only once the test opens a gate, so "not ready yet" is certain while the
// gate is shut.
func TestWaitReadyThenFree(t *testing.T) {
	dir := cliDataDir(t)
	gate := filepath.Join(t.TempDir(), "gate")
	port := testutil.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	start := time.Now()
	w := startRun(t, nil, dir, []string{"--ready-tcp", addr}, "sh", "-c",
		fmt.Sprintf("sleep 1; while [ ! -e %s ]; do sleep 0.05; done; exec python3 -m http.server --bind 127.0.0.1 %d", gate, port))
	// sh execs python: the pinned PID stays the server.
	r := waitHeld(t, dir, "", 5*time.Second)
	server := cliPin(t, r.ChildPID, w.PID())
	if r.Status != "starting" {
		t.Errorf("status %q before the port is open, want starting", r.Status)
	}

	// Held but not ready: --for ready and --for free both time out.
	code, _, stderr := dirlockd(t, "wait", "-D", dir, "--for", "ready", "--timeout", "300ms")
	if code != 1 || !strings.Contains(stderr, "timed out") || !strings.Contains(stderr, "for=ready") {
		t.Errorf("wait --for ready --timeout 300ms on a starting server: exit %d, stderr %q; want 1, timed out", code, stderr)
	}
	code, _, stderr = dirlockd(t, "wait", "-D", dir, "--for", "free", "--timeout", "300ms")
	if code != 1 || !strings.Contains(stderr, "timed out") || !strings.Contains(stderr, "state=held") {
		t.Errorf("wait --for free --timeout 300ms while held: exit %d, stderr %q; want 1, timed out", code, stderr)
	}

	waiter, werr, waited := cliBackground(t, "wait", "-D", dir, "--for", "ready", "--timeout", "15s")
	select {
	case <-waited:
		t.Fatalf("wait --for ready returned before the server listened: exit %d; %s", waiter.ProcessState.ExitCode(), werr)
	case <-time.After(300 * time.Millisecond):
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	opened := time.Now()
	select {
	case <-waited:
	case <-time.After(15 * time.Second):
		t.Fatalf("wait --for ready did not return; wrapper:\n%s", w.Stderr())
	}
	if code := waiter.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("wait --for ready: exit %d; %s\nwrapper:\n%s", code, werr, w.Stderr())
	}
	if el := time.Since(start); el < 800*time.Millisecond {
		t.Errorf("wait --for ready returned after %v, before the server could listen", el)
	}
	t.Logf("ready %v after the gate opened, %v after the start", time.Since(opened), time.Since(start))
	if c, err := net.DialTimeout("tcp", addr, time.Second); err != nil {
		t.Errorf("wait --for ready returned but %s does not accept: %v", addr, err)
	} else {
		c.Close()
	}
	if r := waitHeld(t, dir, "ready", time.Second); r.ChildPID != server.pid {
		t.Errorf("child_pid %d once ready, %d while starting", r.ChildPID, server.pid)
	}
	if !strings.Contains(w.Stderr(), "via=\"tcp "+addr+"\"") {
		t.Errorf("the wrapper did not mark ready through --ready-tcp:\n%s", w.Stderr())
	}

	// Held and ready: --for free still times out.
	code, _, stderr = dirlockd(t, "wait", "-D", dir, "--for", "free", "--timeout", "300ms")
	if code != 1 || !strings.Contains(stderr, "timed out") || !strings.Contains(stderr, "state=held") {
		t.Errorf("wait --for free --timeout 300ms while held: exit %d, stderr %q; want 1, timed out", code, stderr)
	}

	// A waiter for free returns once stop has freed the directory.
	waiter, werr, waited = cliBackground(t, "wait", "-D", dir, "--for", "free", "--timeout", "15s")
	select {
	case <-waited:
		t.Fatalf("wait --for free returned while held: exit %d; %s", waiter.ProcessState.ExitCode(), werr)
	case <-time.After(300 * time.Millisecond):
	}
	if code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "10s"); code != 0 {
		t.Fatalf("stop: exit %d; %s", code, stderr)
	}
	select {
	case <-waited:
		if code := waiter.ProcessState.ExitCode(); code != 0 {
			t.Errorf("wait --for free after stop: exit %d; %s", code, werr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("wait --for free did not return after stop")
	}
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Errorf("wrapper exit %d after stop, want 143 (python killed by SIGTERM); stderr:\n%s", code, w.Stderr())
	}
	if server.alive() {
		t.Errorf("the server %d outlived stop", server.pid)
	}
	code, _, stderr = dirlockd(t, "wait", "-D", dir, "--for", "free", "--timeout", "1s")
	if code != 0 || stderr != "" {
		t.Errorf("wait --for free on a free dir: exit %d, stderr %q", code, stderr)
	}
}

func TestWaitUsage(t *testing.T) {
	dir := cliDataDir(t)
	for _, args := range [][]string{
		{"--for", "started"},
		{"--timeout", "-1s"},
		{"extra"},
	} {
		code, out, stderr := dirlockd(t, append([]string{"wait", "-D", dir}, args...)...)
		if code != exitcode.Usage || out != "" || !strings.Contains(stderr, "want --for free or --for ready") {
			t.Errorf("wait %v: exit %d, stdout %q, stderr %q; want 64", args, code, out, stderr)
		}
	}
	if code, _, stderr := dirlockd(t, "wait", "-D", dir, "--for"); code != exitcode.Usage || !strings.Contains(stderr, "flag needs an argument") {
		t.Errorf("wait --for without a value: exit %d, %q; want 64", code, stderr)
	}
}
