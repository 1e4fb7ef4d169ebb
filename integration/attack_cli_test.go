package integration

// Issue 17's attacks on dirlockd run's inputs by another local user: a
// --main-pid-file that is a FIFO, /dev/zero or a symlink to a root-only
// file; a flood of forged notifications; and names with control
// characters. Each runs with a real unprivileged user the test creates.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// userPrefix names the users these tests create.
const userPrefix = "dl17b"

// vmRSS returns the resident memory of pid in bytes (0 if it is gone).
func vmRSS(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestMainPIDFileAttacks: the server's user controls its --main-pid-file.
// Made a FIFO it must not block the supervisor, a symlink to /dev/zero must
// not fill its memory, and a symlink to a file only root may read must not
// put that file in the log. Each time the file is refused, SIGTERM is
// answered at once, and the wrapper stays small. One attempt each.
func TestMainPIDFileAttacks(t *testing.T) {
	u := testutil.NewUser(t, userPrefix)
	base := t.TempDir()
	own := u.Dir(t, base, "own") // the server's user's directory
	b := make([]byte, 8)
	rand.Read(b)
	secretText := "dl17b-root-only-" + hex.EncodeToString(b)
	secret := filepath.Join(base, "secret")
	if err := os.WriteFile(secret, []byte(secretText+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(own, "fifo.pid")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	u.Chown(t, fifo)
	link := func(name, target string) string {
		l := filepath.Join(own, name)
		if err := os.Symlink(target, l); err != nil {
			t.Fatal(err)
		}
		u.Chown(t, l)
		return l
	}
	zero, shadow := link("zero.pid", "/dev/zero"), link("secret.pid", secret)
	const maxRSS = 64 << 20
	for _, c := range []struct{ name, file, refusal string }{
		{"fifo", fifo, "not a regular file (a FIFO)"},
		// The user's symlink out of its own directory, to root's /, is
		// refused before /dev/zero's type is seen; a /dev/zero named
		// directly is refused for its type (cmd/dirlockd's unit test).
		{"dev-zero", zero, fmt.Sprintf("refused: its path passes from %s (owned by uid %d) to / (owned by uid 0)", zero, u.UID)},
		{"root-only", shadow, fmt.Sprintf("refused: its path passes from %s (owned by uid %d) to / (owned by uid 0)", shadow, u.UID)},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			w := startRun(t, nil, dir, []string{"--main-pid-file", c.file}, "sleep", "300")
			waitHeld(t, dir, "ready", 10*time.Second)
			// The file is read every 100 ms: the refusal says it was.
			if !w.WaitOutput(c.refusal, 5*time.Second) {
				t.Errorf("no refusal %q in the log", c.refusal)
			}
			if rss := vmRSS(w.PID()); rss == 0 || rss > maxRSS {
				t.Errorf("the wrapper's resident memory: %d bytes, want some, and at most %d", rss, maxRSS)
			}
			start := time.Now()
			syscall.Kill(w.PID(), syscall.SIGTERM)
			code, ok := w.Exited(5 * time.Second)
			switch {
			case !ok:
				t.Errorf("SIGTERM unanswered for 5 s")
			case code != 128+int(syscall.SIGTERM):
				t.Errorf("exit %d after SIGTERM, want %d (the server's)", code, 128+syscall.SIGTERM)
			default:
				t.Logf("SIGTERM answered in %v", time.Since(start).Round(time.Millisecond))
			}
			if strings.Contains(w.Output(), secretText) {
				t.Errorf("the root-only file's content is in the output")
			}
			if t.Failed() {
				t.Logf("log:\n%s", w.Output())
			}
		})
	}
}

// notifyFlood sends args[1] READY=1 notifications to the socket args[0].
func notifyFlood(args []string) int {
	n, err := strconv.Atoi(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for range n {
		if err := notify.Send(args[0], notify.Field{Key: "READY", Value: "1"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// TestNotifyFlood: another user floods the wrapper's notify socket (an
// abstract one: every process of the network namespace can reach it).
// Every datagram is ignored, and the log gets the first one and a count,
// not a line each (18,000 lines in 2 s before).
func TestNotifyFlood(t *testing.T) {
	const floods = 20000
	u := testutil.NewUser(t, userPrefix)
	dir := testutil.DataDir(t)
	sockFile := filepath.Join(t.TempDir(), "socket")
	w := startRun(t, nil, dir, []string{"--ready-notify"}, "sh", "-c", `printf %s "$NOTIFY_SOCKET" >`+sockFile+`; exec sleep 300`)
	var sock string
	testutil.Eventually(t, 10*time.Second, "the server to write its NOTIFY_SOCKET", func() bool {
		b, _ := os.ReadFile(sockFile)
		sock = string(b)
		return sock != ""
	})
	start := time.Now()
	if out, err := u.Command(t, "notify-flood", sock, strconv.Itoa(floods)).CombinedOutput(); err != nil {
		t.Fatalf("the flood as %s: %v: %s", u.Name, err, out)
	}
	t.Logf("%d datagrams sent as %s in %v", floods, u.Name, time.Since(start).Round(time.Millisecond))
	if _, r := check(t, dir); r.Status != "starting" {
		t.Errorf("status %q after the flood of READY=1, want starting: a forged notification was heard", r.Status)
	}
	syscall.Kill(w.PID(), syscall.SIGTERM)
	w.WaitExit(t, 10*time.Second)
	var lines []string
	for _, l := range strings.Split(w.Stderr(), "\n") {
		if strings.Contains(l, "notification") {
			lines = append(lines, l)
		}
	}
	// The first, and one summary at the end: a minute has not passed.
	if len(lines) > 3 || len(lines) == 0 || !strings.Contains(lines[len(lines)-1], fmt.Sprintf("count=%d", floods-1)) {
		n := min(len(lines), 5)
		t.Errorf("%d log lines about notifications, want at most 3 ending with a count of %d; the first %d:\n%s",
			len(lines), floods-1, n, strings.Join(lines[:n], "\n"))
	}
}

// TestRecheckFloor: --recheck 1ns made a loop of the recheck (2.5 s of
// CPU in 3 s); below 100ms it is a usage error that names the floor.
func TestRecheckFloor(t *testing.T) {
	dir := testutil.DataDir(t)
	for _, c := range []struct{ flag, value, want string }{
		{"--recheck", "1ns", "--recheck 1ns: below the floor of 100ms (0: never recheck)"},
		{"--stop-timeout", "1us", "--stop-timeout 1µs: below the floor of 100ms"},
		{"--takeover-after", "10ms", "--takeover-after 10ms: below the floor of 1s"},
	} {
		code, _, stderr := dirlockd(t, "run", "-D", dir, c.flag, c.value, "--", "true")
		if code != exitcode.Usage || !strings.Contains(stderr, c.want) {
			t.Errorf("run %s %s: exit %d, %q; want %d, %q", c.flag, c.value, code, stderr, exitcode.Usage, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, pidfile.DefaultName)); err == nil {
		t.Errorf("a refused command line created the pidfile")
	}
}

// setHostnameExec sets the hostname (in the UTS namespace it was started
// in) to args[0] and execs args[1:].
func setHostnameExec(args []string) int {
	if err := unix.Sethostname([]byte(args[0])); err != nil {
		fmt.Fprintln(os.Stderr, "sethostname:", err)
		return 1
	}
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, testutil.HelperEnv+"=") {
			env = append(env, e)
		}
	}
	err := syscall.Exec(args[1], args[1:], env)
	fmt.Fprintln(os.Stderr, "exec:", err)
	return 1
}

// TestControlCharactersEscaped: a data directory's path and a record's
// hostname are others' choice; a newline or a terminal escape in them is
// printed escaped by check and status and in text logs: one line stays one
// line, and the terminal is not driven.
func TestControlCharactersEscaped(t *testing.T) {
	const esc = "\x1b[2J\x1b[31m"
	raw := func(t *testing.T, what, out string, lines int) {
		t.Helper()
		if strings.Contains(out, "\x1b") || strings.Count(out, "\n") != lines {
			t.Errorf("%s: raw control characters, or not %d lines: %q", what, lines, out)
		}
		// A text log's value with a space in it is quoted by the
		// handler once more: \\x1b then.
		if !strings.Contains(out, `x1b[2J\x1b[31m`) && !strings.Contains(out, `x1b[2J\\x1b[31m`) {
			t.Errorf("%s: the escape not shown escaped: %q", what, out)
		}
	}
	t.Run("datadir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data\n"+esc+"fake: line")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		_, out, _ := dirlockd(t, "check", "-D", dir)
		raw(t, "check", out, 1)
		_, out, _ = dirlockd(t, "status", "-D", dir)
		raw(t, "status", out, 1)
		code, _, logs := dirlockd(t, "run", "-D", dir, "--log-format", "text", "--", "true")
		if code != 0 {
			t.Fatalf("run: exit %d: %s", code, logs)
		}
		raw(t, "run's text log", logs, strings.Count(logs, "\n"))
		if n := strings.Count(logs, "\n"); n < 3 || strings.Contains(logs, "\nfake: line") {
			t.Errorf("run's text log: a line starts inside the path: %q", logs)
		}
	})
	t.Run("hostname", func(t *testing.T) {
		dir := testutil.DataDir(t)
		cmd := testutil.Command("sethostname-exec", "host\n"+esc+"x", bin, "run", "-D", dir, "--", "sleep", "300")
		cmd.Stderr = nil
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUTS}
		w := testutil.StartLogged(t, cmd)
		killTreeAtEnd(t, w)
		waitHeld(t, dir, "ready", 10*time.Second)
		_, out, _ := dirlockd(t, "status", "-D", dir)
		raw(t, "status", out, 4)
		_, out, _ = dirlockd(t, "check", "-D", dir)
		if strings.Count(out, "\n") != 1 || strings.Contains(out, "\x1b") {
			t.Errorf("check: %q", out)
		}
		syscall.Kill(w.PID(), syscall.SIGTERM)
		w.WaitExit(t, 10*time.Second)
	})
}

// TestStatusHeldWithoutRecord: a lock held by a process that wrote no
// record (a start under way, or another program) is said so, not
// "pid 0 ... host  ... status ,".
func TestStatusHeldWithoutRecord(t *testing.T) {
	dir := testutil.DataDir(t)
	f, err := os.OpenFile(filepath.Join(dir, pidfile.DefaultName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	code, out, _ := dirlockd(t, "status", "-D", dir)
	want := fmt.Sprintf("no record: %s is in use: the pidfile lock is held by PID %d", dir, os.Getpid())
	if code != exitcode.StatusRunning || !strings.Contains(out, want) || strings.Contains(out, "pid 0") || strings.Contains(out, "status ,") {
		t.Errorf("status: exit %d, %q; want %d, %q", code, out, exitcode.StatusRunning, want)
	}
}
