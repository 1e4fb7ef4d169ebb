package integration

// What dirlockd run logs: formats, order, and a log pipe closed under it.

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// TestClosedLogPipe: when whatever reads dirlockd's output goes away, the
// wrapper must not die of SIGPIPE and leave its server unsupervised: it keeps
// going, and releases when the server exits.
func TestClosedLogPipe(t *testing.T) {
	dir := testutil.DataDir(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "-D", dir, "--", "sh", "-c", `trap '' PIPE; sleep 1; echo late || true`)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	waitHeld(t, dir, "ready", 10*time.Second)
	r.Close() // the reader is gone: every later write gets EPIPE
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatal("dirlockd run did not exit")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit %d (%v), want 0: dirlockd must survive a closed log pipe", code, cmd.ProcessState)
	}
	if code, rep := check(t, dir); code != 0 || rep.Status != "stopped" {
		t.Errorf("after the server exited: check %d, %+v; want a clean release", code, rep)
	}
}

// jsonLog decodes a --log-format json log: one object per line, none torn.
func jsonLog(t *testing.T, log string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for i, line := range strings.Split(strings.TrimSuffix(log, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %d is not a JSON object: %q: %v", i+1, line, err)
		}
		recs = append(recs, m)
	}
	return recs
}

// jsonRecord returns the first record with message msg.
func jsonRecord(t *testing.T, recs []map[string]any, msg string) map[string]any {
	t.Helper()
	for _, m := range recs {
		if m["msg"] == msg {
			return m
		}
	}
	t.Fatalf("no %q record in %v", msg, recs)
	return nil
}

// TestLogJSONTypes: in --log-format json, lock methods, signals, states and
// statuses are strings; PIDs, segment ids and durations (in nanoseconds) are
// numbers (docs/cli.md, Logging).
func TestLogJSONTypes(t *testing.T) {
	dir := testutil.DataDir(t)
	w := startRun(t, nil, dir, []string{"--log-format", "json"}, "sleep", "300")
	r := waitHeld(t, dir, "ready", 10*time.Second)

	code, _, stderr := dirlockd(t, "wait", "-D", dir, "--for", "free", "--timeout", "200ms", "--log-format", "json")
	if code != 1 {
		t.Fatalf("wait --for free while held: exit %d, %s", code, stderr)
	}
	timedOut := jsonRecord(t, jsonLog(t, stderr), "timed out")
	code, _, stderr = dirlockd(t, "stop", "-D", dir, "--timeout", "10s", "--log-format", "json")
	if code != 0 {
		t.Fatalf("stop: exit %d, %s", code, stderr)
	}
	stop := jsonLog(t, stderr)
	if code := w.WaitExit(t, 10*time.Second); code != exitcode.SignalBase+int(syscall.SIGTERM) {
		t.Fatalf("wrapper exit %d after stop, want 143; stderr:\n%s", code, w.Stderr())
	}
	run := jsonLog(t, w.Stderr())

	for _, c := range []struct {
		rec  map[string]any
		key  string
		want any // a string, or a float64 for a number
	}{
		{jsonRecord(t, run, "acquired the data directory"), "lock_method", "flock"},
		{jsonRecord(t, run, "acquired the data directory"), "datadir", dir},
		{jsonRecord(t, run, "started the server"), "pid", float64(r.ChildPID)},
		{jsonRecord(t, run, "the server is ready"), "via", "started"},
		{jsonRecord(t, run, "stopping the server"), "reason", "signal SIGTERM"},
		{jsonRecord(t, run, "stopping the server"), "stop_timeout", float64(time.Minute)},
		{jsonRecord(t, run, "the server was killed by a signal"), "signal", "SIGTERM"},
		{jsonRecord(t, run, "the server was killed by a signal"), "pid", float64(r.ChildPID)},
		{jsonRecord(t, stop, "signalled the holder; waiting for the lock to be released"), "signal", "SIGTERM"},
		{jsonRecord(t, stop, "signalled the holder; waiting for the lock to be released"), "pid", float64(w.PID())},
		{jsonRecord(t, stop, "signalled the holder; waiting for the lock to be released"), "timeout", float64(10 * time.Second)},
		{timedOut, "state", "held"},
		{timedOut, "for", "free"},
		{timedOut, "timeout", float64(200 * time.Millisecond)},
	} {
		if got := c.rec[c.key]; got != c.want {
			t.Errorf("%q record: %s = %#v (%T), want %#v (%T)", c.rec["msg"], c.key, got, got, c.want, c.want)
		}
	}
	acq := jsonRecord(t, run, "acquired the data directory")
	if key, ok := acq["shm_key"].(string); !ok || !strings.HasPrefix(key, "0x") {
		t.Errorf("shm_key = %#v, want a string 0x…", acq["shm_key"])
	}
	if _, ok := acq["shm_id"].(float64); !ok {
		t.Errorf("shm_id = %#v, want a number", acq["shm_id"])
	}
	if _, ok := jsonRecord(t, stop, "stopped")["after"].(float64); !ok {
		t.Errorf("stop's after = %#v, want a number", jsonRecord(t, stop, "stopped")["after"])
	}
}

// TestStopLogOrder: what a Ctrl-C (SIGINT to dirlockd, the terminal's
// foreground process group; the server has a group of its own) logs, in
// order, as README.md and docs/cli.md quote it: the stop begins, the server
// dies or exits, the directory is released, and nothing follows.
func TestStopLogOrder(t *testing.T) {
	for _, c := range []struct {
		name   string
		argv   []string
		exit   int
		server string // the line that says how the server ended
	}{
		{"killed", []string{"sleep", "infinity"}, 130, `msg="the server was killed by a signal"`},
		{"exited", []string{"sh", "-c", `trap 'exit 7' INT; echo up; while :; do sleep 0.05; done`}, 7, `msg="the server exited"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			w := startRun(t, nil, dir, nil, c.argv...)
			waitHeld(t, dir, "ready", 10*time.Second)
			if c.argv[0] == "sh" {
				testutil.Eventually(t, 5*time.Second, "the server's trap", func() bool { return strings.Contains(w.Stdout(), "up") })
			}
			w.Cmd.Process.Signal(syscall.SIGINT)
			if code := w.WaitExit(t, 10*time.Second); code != c.exit {
				t.Fatalf("exit %d after SIGINT, want %d; stderr:\n%s", code, c.exit, w.Stderr())
			}
			lines := strings.Split(strings.TrimSuffix(w.Stderr(), "\n"), "\n")
			want := []string{`msg="stopping the server"`, c.server, `msg="released the data directory"`}
			at := -1
			for _, k := range want {
				i := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, k) })
				if i <= at {
					t.Fatalf("%s at line %d, want it after line %d (%v in order, last); log:\n%s", k, i+1, at+1, want, w.Stderr())
				}
				at = i
			}
			if at != len(lines)-1 {
				t.Errorf("lines after the release:\n%s", strings.Join(lines[at+1:], "\n"))
			}
			if !strings.Contains(lines[0], `msg="acquired the data directory"`) || !strings.Contains(w.Stderr(), `reason="signal SIGINT"`) {
				t.Errorf("log:\n%s", w.Stderr())
			}
		})
	}
}
