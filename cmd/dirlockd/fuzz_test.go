package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dirlockd/dirlockd/internal/exitcode"
)

// fuzzCommands are the commands FuzzArgs drives, chosen by the input's first
// byte, with the exit statuses each documents (docs/cli.md).
var fuzzCommands = []struct {
	name  string
	exits []int
}{
	{"check", []int{exitcode.CheckFree, exitcode.CheckHeld, exitcode.CheckOrphans, exitcode.CheckInvalid, exitcode.Usage}},
	{"status", []int{exitcode.StatusRunning, exitcode.StatusDead, exitcode.StatusNotRunning, exitcode.StatusUnknown, exitcode.StatusStopping, exitcode.StatusUnsupervised}},
	{"wait", []int{0, 1, 3, exitcode.Usage}},
	{"stop", []int{0, 1, 3, exitcode.Usage}},
	{"run", []int{0, exitcode.Usage, exitcode.Internal, exitcode.Held, exitcode.Orphans, exitcode.Invalid, exitcode.NoExec, exitcode.NotFound}},
	{"reload", []int{0, 1, 3, reloadNotRunning, exitcode.Usage}},
}

// fuzzSplit splits the fuzzer's text into arguments: on NUL bytes when it
// has any (so that arguments may hold spaces), else on white space.
func fuzzSplit(s string) []string {
	if strings.ContainsRune(s, 0) {
		return strings.Split(s, "\x00")
	}
	return strings.Fields(s)
}

// fuzzArgs turns the fuzzer's input into a command line that is safe to
// execute in-process: every data directory is dir (a fresh empty one), wait
// and stop give up after 10ms, and run can execute nothing but true.
func fuzzArgs(data []byte, dir string) (cmd string, args []string) {
	c := fuzzCommands[int(data[0])%len(fuzzCommands)]
	in := fuzzSplit(string(data[1:]))
	if c.name == "run" {
		// Nothing after a "--" survives: the command is ours.
		if i := slices.Index(in, "--"); i >= 0 {
			in = in[:i]
		}
		// run's flags end at the first word that is not one, COMMAND:
		// no word that names a program by its path may stand there.
		// Any other word is looked up in $PATH, which holds only true.
		in = slices.DeleteFunc(in, func(a string) bool { return !strings.HasPrefix(a, "-") && strings.ContainsRune(a, '/') })
	}
	args = []string{"-D", dir}
	for _, a := range in {
		switch {
		// No other data directory: -D, --datadir, and shorthand bundles
		// that could end in D.
		case strings.HasPrefix(a, "-D"), strings.HasPrefix(a, "--datadir"),
			strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && strings.ContainsRune(a, 'D'):
			continue
		// run --user changes the user of the whole test process: never.
		// Its value then stands as COMMAND, not found in $PATH.
		case c.name == "run" && strings.HasPrefix(a, "--user"):
			continue
		// run dials --ready-tcp's address: only loopback, or an address
		// that fails validation before any dial. The bare flag goes; its
		// value then stands as a stray argument, a usage error.
		case c.name == "run" && strings.HasPrefix(a, "--ready-tcp"):
			v, ok := strings.CutPrefix(a, "--ready-tcp=")
			if !ok {
				continue
			}
			if host, _, err := net.SplitHostPort(v); err == nil && host != "127.0.0.1" && host != "::1" {
				continue
			}
		}
		args = append(args, a)
	}
	switch c.name {
	case "wait", "stop":
		// A later flag wins: never wait longer than this.
		args = append(args, "--timeout", "10ms")
	case "run":
		// If the last argument is a flag still missing its value, the
		// harmless --log-format=logfmt becomes that value, so the "--"
		// ends the flags unless a stray word came first: that word is
		// then COMMAND, found in $PATH (true) or not (127).
		args = append(args, "--log-format=logfmt", "--", "true")
	}
	return c.name, args
}

func fuzzSeed(cmd byte, args ...string) []byte {
	return append([]byte{cmd}, strings.Join(args, "\x00")...)
}

// FuzzArgs feeds arbitrary command lines to every command's argument
// handling. Whatever it gets, a command must not panic, must exit with a
// status it documents, and must say why when it refuses a command line.
func FuzzArgs(f *testing.F) {
	// Defence in depth: the only command run can find is true.
	bin := f.TempDir()
	for _, d := range []string{"/usr/bin", "/bin"} {
		if _, err := os.Stat(d + "/true"); err == nil {
			if err := os.Symlink(d+"/true", filepath.Join(bin, "true")); err != nil {
				f.Fatal(err)
			}
			break
		}
	}
	f.Setenv("PATH", bin)
	f.Setenv("DIRLOCKD_DATADIR", "")
	f.Setenv("NOTIFY_SOCKET", "")

	const check, status, wait, stop, run, reload = 0, 1, 2, 3, 4, 5
	for _, s := range [][]byte{
		fuzzSeed(check),
		fuzzSeed(check, "--json"),
		fuzzSeed(check, "-D", "/var/lib/postgresql/16/main", "--json"),
		fuzzSeed(check, "--pidfile", "postmaster.pid", "--lock-method", "ofd"),
		fuzzSeed(check, "--log-format", "json", "--log-level", "debug"),
		fuzzSeed(check, "--help"),
		fuzzSeed(check, "--bogus"),
		fuzzSeed(check, "--json=maybe", "stray"),
		fuzzSeed(status),
		fuzzSeed(status, "--json"),
		fuzzSeed(status, "--pidfile", "redis.pid", "--lock-method", "posix"),
		fuzzSeed(status, "--bogus"),
		fuzzSeed(status, "-h"),
		fuzzSeed(wait, "--for", "ready"),
		fuzzSeed(wait, "--for", "free", "--timeout", "30s"),
		fuzzSeed(wait, "--for", "nothing"),
		fuzzSeed(wait, "--timeout", "-1s"),
		fuzzSeed(stop),
		fuzzSeed(stop, "--signal", "INT", "--timeout", "2m", "--kill-after", "90s"),
		fuzzSeed(stop, "--signal", "SIGKILL"),
		fuzzSeed(stop, "--signal", "0"),
		fuzzSeed(stop, "--signal", "65"),
		fuzzSeed(stop, "--signal", "BOGUS"),
		fuzzSeed(stop, "--kill-after", "1s"),
		fuzzSeed(run, "--", "true"),
		fuzzSeed(run, "--wait", "30s", "--", "etcd", "--data-dir", "/var/lib/etcd"),
		fuzzSeed(run, "--ready-tcp", "127.0.0.1:8080", "--signal-group", "--", "./server"),
		fuzzSeed(run, "--ready-tcp=127.0.0.1:1", "--", "true"),
		fuzzSeed(run, "--ready-tcp=nonsense", "--", "true"),
		fuzzSeed(run, "--ready-notify", "--stop-timeout", "5s", "--", "redis-server", "--supervised", "systemd"),
		fuzzSeed(run, "--recheck", "1ms", "--on-lost", "log", "--", "sleep", "1"),
		fuzzSeed(run, "--recheck", "-1s", "--", "true"),
		fuzzSeed(run, "--wait", "soon", "--", "true"),
		fuzzSeed(run, "--lock-method", "carrier-pigeon", "--", "true"),
		fuzzSeed(run, "--conflict-exit-code", "0", "--", "true"),
		fuzzSeed(run, "--conflict-exit-code", "300", "--", "true"),
		fuzzSeed(run, "--on-lost", "maybe", "--", "true"),
		fuzzSeed(run, "--pidfile", "a/b", "--", "true"),
		fuzzSeed(run, "--pidfile", "..", "--", "true"),
		fuzzSeed(run, "--lock-method", "posix", "--log-level", "debug", "--", "true"),
		fuzzSeed(run, "stray", "--", "true"),
		fuzzSeed(run, "rm", "--pidfile"),
		fuzzSeed(run, "true", "-D", "elsewhere", "--wait", "soon"),
		fuzzSeed(run, "--port", "6399", "true"),
		fuzzSeed(run, "/bin/rm", "-rf", "."),
		fuzzSeed(run, "--user", "nobody", "--", "true"),
		fuzzSeed(run, "--kill-mode", "mixed", "--stop-signal", "INT", "--reload-signal", "USR1", "--", "true"),
		fuzzSeed(run, "--kill-mode", "cgroup", "--", "true"),
		fuzzSeed(run, "--stop-signal", "BOGUS", "--", "true"),
		fuzzSeed(stop, "--survivors", "--kill-after", "1s"),
		fuzzSeed(reload),
		fuzzSeed(reload, "--bogus"),
		fuzzSeed(run),
		[]byte("\x04--wait 1s --recheck 0 -- true"),
		[]byte("\x00--json -D a -D b"),
	} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		cmd, args := fuzzArgs(data, t.TempDir())
		var stdout, stderr bytes.Buffer
		code := dispatch(append([]string{cmd}, args...), &stdout, &stderr)
		var exits []int
		for _, c := range fuzzCommands {
			if c.name == cmd {
				exits = c.exits
			}
		}
		if !slices.Contains(exits, code) {
			t.Errorf("dirlockd %s %q: exit %d, not one %s documents %v\nstdout: %s\nstderr: %s",
				cmd, args, code, cmd, exits, stdout.String(), stderr.String())
		}
		if code == exitcode.Usage && stderr.Len() == 0 {
			t.Errorf("dirlockd %s %q: exit %d without a word on stderr", cmd, args, code)
		}
	})
}
