package torture

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/pidfile"
)

// BadInputs: malformed pidfiles, wrong file types, owners and modes, foreign
// segments, segments removed under a holder, bad command lines.
func BadInputs() []Scenario {
	return []Scenario{
		{Name: "bad input: malformed pidfiles", Run: badPidfiles},
		{Name: "bad input: wrong types, owners, modes", Run: badObjects},
		{Name: "bad input: foreign segments at every key", Run: badForeignSegments},
		{Name: "bad input: segment removed under a holder", Run: badSegmentRemoved},
		{Name: "bad input: shm_rmid_forced IPC namespace", Run: badRmidForced},
		{Name: "bad input: bad command lines", Run: badCommandLines},
	}
}

// foreignRecord is a plausible record of a holder on another boot.
func foreignRecord(dir string) *pidfile.Record {
	return &pidfile.Record{PID: 4242, DataDir: dir, StartTime: time.Now().UTC(), BootID: "00000000-0000-4000-8000-000000000000",
		Hostname: "elsewhere", PIDNS: 4026531836, PIDStart: 123456, ShmKey: 0, ShmID: -1, LockMethod: pidfile.Flock,
		Status: pidfile.Ready, Token: strings.Repeat("5a", 16), Version: pidfile.Version}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// seal appends a matching checksum line to body, so that only what the
// body says is wrong.
func seal(body string) []byte {
	return fmt.Appendf(nil, "%scrc32c=%08x\n", body, crc32.Checksum([]byte(body), castagnoli))
}

// recordBody is a record's text without its checksum line.
func recordBody(r *pidfile.Record) string {
	b := string(r.Marshal())
	return b[:strings.LastIndex(b[:len(b)-1], "\n")+1]
}

// malformedPidfiles are the classes of malformed pidfile content.
func malformedPidfiles(e *Env) []struct {
	name    string
	content func(dir string) []byte
} {
	withPID := func(pid string) func(string) []byte {
		return func(dir string) []byte {
			_, rest, _ := strings.Cut(recordBody(foreignRecord(dir)), "\n")
			return seal(pid + "\n" + rest)
		}
	}
	return []struct {
		name    string
		content func(dir string) []byte
	}{
		{"empty", func(string) []byte { return []byte{} }},
		{"garbage text", func(string) []byte { return []byte("this is not a pidfile\nhello=world\n") }},
		{"binary", func(string) []byte {
			b := make([]byte, 512)
			for i := range b {
				b[i] = byte(e.Rand.Uint32())
			}
			return b
		}},
		{"oversized (1 MiB)", func(dir string) []byte {
			// One record, marshalled once: its time stamp, and so its
			// length, differ from call to call.
			b := foreignRecord(dir).Marshal()
			return bytes.Repeat(b, 1<<20/len(b)+1)[:1<<20]
		}},
		{"truncated mid-line", func(dir string) []byte {
			b := foreignRecord(dir).Marshal()
			cut := len(b) / 2
			for b[cut-1] == '\n' || b[cut] == '\n' {
				cut++
			}
			return b[:cut]
		}},
		{"negative PID", withPID("-4242")},
		{"zero PID", withPID("0")},
		{"huge PID", withPID("99999999999999999999")},
		{"PID above pid_max", withPID(strconv.Itoa(1<<22 + 1))},
		{"duplicate keys", func(dir string) []byte {
			return seal(strings.Replace(recordBody(foreignRecord(dir)), "status=ready\n", "status=ready\nstatus=stopped\n", 1))
		}},
		{"CRLF line endings", func(dir string) []byte {
			return []byte(strings.ReplaceAll(string(foreignRecord(dir).Marshal()), "\n", "\r\n"))
		}},
		{"CRLF, resealed", func(dir string) []byte {
			return seal(strings.ReplaceAll(recordBody(foreignRecord(dir)), "\n", "\r\n"))
		}},
		{"missing PID line", func(dir string) []byte {
			_, rest, _ := strings.Cut(recordBody(foreignRecord(dir)), "\n")
			return seal(rest)
		}},
		{"PostgreSQL postmaster.pid", func(dir string) []byte {
			return fmt.Appendf(nil, "4242\n%s\n1763790000\n5432\n/var/run/postgresql\nlocalhost\n  5432001     32768\nready   \n", dir)
		}},
	}
}

// badPidfiles: every class of malformed pidfile, planted before a start:
// a safe takeover that says the previous record was unreadable.
func badPidfiles(e *Env) Result {
	var r Result
	w := e.NewWitness()
	want := 0
	classes := malformedPidfiles(e)
	for rep := range max(1, e.Scale.Iterations/10) {
		for _, c := range classes {
			dir := e.DataDir()
			what := fmt.Sprintf("%s (round %d)", c.name, rep)
			content := c.content(dir)
			path := pidfilePath(dir)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				r.fail("set-up: %v", err)
				continue
			}
			if _, err := pidfile.Parse(content); err == nil {
				r.fail("set-up: %s parses as a record", what)
			}
			r.Faults++
			r.Iterations++
			code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...)
			if code != 0 || panicked(out) {
				r.fail("%s: exit %d, want 0 (safe takeover): %s", what, code, out)
				continue
			}
			want++
			if !strings.Contains(out, "no readable record") {
				r.fail("%s: taken over without reporting the unreadable previous record: %s", what, out)
			}
			if rec, after, err := readPidfile(dir); err != nil || rec.Status != pidfile.Stopped || rec.PID == 4242 {
				r.fail("%s: after the takeover the pidfile is not the new holder's released record (%v): %.200q", what, err, after)
			}
			noSegmentsDir(&r, what, dir)
		}
	}
	notes := fmt.Sprintf("; %d classes, each taken over safely and reported", len(classes))
	return verify(w, r, want, notes)
}

// snapshot describes everything about path that a refused start must
// leave alone: inode, type, mode, owner, content (or link target, or
// directory entries).
func snapshot(path string) string {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return "lstat: " + err.Error()
	}
	s := fmt.Sprintf("ino %d mode %07o uid %d gid %d", st.Ino, st.Mode, st.Uid, st.Gid)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		b, err := os.ReadFile(path)
		s += fmt.Sprintf(" size %d crc %08x %v", len(b), crc32.Checksum(b, castagnoli), err)
	case unix.S_IFLNK:
		t, err := os.Readlink(path)
		s += fmt.Sprintf(" -> %s %v", t, err)
	case unix.S_IFDIR:
		ents, err := os.ReadDir(path)
		for _, d := range ents {
			s += " " + d.Name()
		}
		s += fmt.Sprint(" ", err)
	}
	return s
}

// badObjects: the pidfile or the data directory is of the wrong type, owner
// or mode: refused with exit 78 naming the fix, and left alone.
func badObjects(e *Env) Result {
	var r Result
	w := e.NewWitness()
	var gaps []string
	record := func(dir, path string) error { return os.WriteFile(path, foreignRecord(dir).Marshal(), 0o600) }
	cases := []struct {
		name  string
		fix   string // what the message must say to do
		gap   bool   // a known gap: a missing fix goes to the notes, not the violations
		plant func(dir, pf string) ([]string, error)
	}{
		{"pidfile is a symlink", "remove the link", false, func(dir, pf string) ([]string, error) {
			target := dir + ".target"
			if err := record(dir, target); err != nil {
				return nil, err
			}
			return []string{pf, target}, os.Symlink(target, pf)
		}},
		{"pidfile is a FIFO", "remove it", false, func(dir, pf string) ([]string, error) {
			return []string{pf}, unix.Mkfifo(pf, 0o600)
		}},
		{"pidfile is a directory", "remove or rename it", false, func(dir, pf string) ([]string, error) {
			if err := os.Mkdir(pf, 0o700); err != nil {
				return nil, err
			}
			return []string{pf, pf + "/keep"}, os.WriteFile(pf+"/keep", []byte("keep me\n"), 0o600)
		}},
		{"pidfile is a character device", "remove it", false, func(dir, pf string) ([]string, error) {
			return []string{pf}, unix.Mknod(pf, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3)))
		}},
		{"pidfile is a socket", "remove it", false, func(dir, pf string) ([]string, error) {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err != nil {
				return nil, err
			}
			defer unix.Close(fd)
			return []string{pf}, unix.Bind(fd, &unix.SockaddrUnix{Name: pf})
		}},
		{"pidfile owned by uid 65534", "run as nobody", false, func(dir, pf string) ([]string, error) {
			if err := record(dir, pf); err != nil {
				return nil, err
			}
			return []string{pf}, os.Lchown(pf, 65534, 65534)
		}},
		{"pidfile mode 0666", "chmod 0600", false, func(dir, pf string) ([]string, error) {
			if err := record(dir, pf); err != nil {
				return nil, err
			}
			return []string{pf}, os.Chmod(pf, 0o666)
		}},
		{"data dir mode 0770", "chmod go-w", false, func(dir, pf string) ([]string, error) {
			return []string{dir}, os.Chmod(dir, 0o770)
		}},
		{"data dir owned by uid 65534", "run dirlockd as nobody", false, func(dir, pf string) ([]string, error) {
			return []string{dir}, os.Lchown(dir, 65534, 65534)
		}},
	}
	for rep := range max(1, e.Scale.Iterations/10) {
		for _, c := range cases {
			dir := e.DataDir()
			pf := pidfilePath(dir)
			what := fmt.Sprintf("%s (round %d)", c.name, rep)
			paths, err := c.plant(dir, pf)
			if err != nil {
				r.fail("set-up: %s: %v", what, err)
				continue
			}
			var before []string
			for _, p := range paths {
				before = append(before, snapshot(p))
			}
			r.Faults++
			r.Iterations += 2
			code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...)
			if why := failedCleanly(code, out, c.fix); why != "" || code != exitcode.Invalid {
				if c.gap && code == exitcode.Invalid && failedCleanly(code, out) == "" {
					if rep == 0 {
						gaps = append(gaps, c.name)
					}
				} else {
					r.fail("%s: run: exit %d, want 78 saying %q (%s): %s", what, code, c.fix, why, out)
				}
			}
			// Root may inspect a directory of another user's
			// (issue 18): check answers for it.
			wantCheck := 3
			if c.name == "data dir owned by uid 65534" {
				wantCheck = 0
			}
			if code, out := e.Dirlockd(nil, "check", "-D", dir); code != wantCheck || panicked(out) {
				r.fail("%s: check: exit %d, want %d: %s", what, code, wantCheck, out)
			}
			for i, p := range paths {
				if after := snapshot(p); after != before[i] {
					r.fail("%s: %s changed: %s (was %s)", what, p, after, before[i])
				}
			}
			noSegmentsDir(&r, what, dir)
		}
	}
	notes := fmt.Sprintf("; %d cases, each exit 78 with its fix, check exit 3 (0 for root on another user's directory), nothing touched", len(cases))
	if len(gaps) > 0 {
		notes += fmt.Sprintf(" (finding: %s: exit 78 but the message names no fix)", strings.Join(gaps, ", "))
	}
	return verify(w, r, 0, notes)
}

// badCommandLines: usage errors exit 64 (status: 4, its LSB "unknown"),
// never panic, and touch nothing.
func badCommandLines(e *Env) Result {
	var r Result
	dir := e.DataDir()
	cases := []struct {
		want int
		args []string
	}{
		{exitcode.Usage, nil},
		{exitcode.Usage, []string{"frobnicate"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--bogus", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "-x", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--wait", "soon", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--wait=", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--recheck", "-1s", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--stop-timeout", "-5s", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--lock-method", "carrier-pigeon", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--conflict-exit-code", "0", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--conflict-exit-code", "300", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--conflict-exit-code", "many", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--on-lost", "maybe", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--ready-tcp", "nonsense", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--log-level", "loud", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--log-format", "yaml", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir}},
		{exitcode.Usage, []string{"run", "-D", dir, "--"}},
		// run's flags end at COMMAND: a flag of the server's before it is
		// the usage error ("did you mean -- COMMAND ..."), a stray word
		// is COMMAND.
		{exitcode.Usage, []string{"run", "-D", dir, "--port", "6399", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--kill-mode", "cgroup", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--stop-signal", "BOGUS", "--", "true"}},
		{exitcode.Usage, []string{"reload", "-D", dir, "stray"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--pidfile", "a/b", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D", dir, "--pidfile", "", "--", "true"}},
		{exitcode.Usage, []string{"run", "--", "true"}},
		{exitcode.Usage, []string{"run", "-D"}},
		{exitcode.Usage, []string{"check", "-D", dir, "--bogus"}},
		{exitcode.Usage, []string{"check", "-D", dir, "--json=maybe"}},
		{exitcode.Usage, []string{"check", "-D", dir, "stray"}},
		{exitcode.Usage, []string{"check", "-D", dir, "--lock-method", "carrier-pigeon"}},
		{exitcode.Usage, []string{"stop", "-D", dir, "--timeout", "soon"}},
		{exitcode.Usage, []string{"stop", "-D", dir, "--timeout", "0"}},
		{exitcode.Usage, []string{"stop", "-D", dir, "--timeout", "-1s"}},
		{exitcode.Usage, []string{"stop", "-D", dir, "--signal", "BOGUS"}},
		{exitcode.Usage, []string{"stop", "-D", dir, "--signal", "0"}},
		{exitcode.Usage, []string{"stop", "-D", dir, "--kill-after", "2s", "--timeout", "1s"}},
		{exitcode.Usage, []string{"wait", "-D", dir, "--for", "nothing"}},
		{exitcode.Usage, []string{"wait", "-D", dir, "--timeout", "-1s"}},
		{exitcode.Usage, []string{"wait", "-D", dir, "--timeout", "soon"}},
		{exitcode.Usage, []string{"wait", "-D", dir, "stray"}},
		{exitcode.StatusUnknown, []string{"status", "-D", dir, "--bogus"}},
		{exitcode.StatusUnknown, []string{"status", "--pidfile", "a/b", "-D", dir}},
	}
	for _, c := range cases {
		r.Faults++
		r.Iterations++
		code, out := e.Dirlockd([]string{"DIRLOCKD_DATADIR="}, c.args...)
		if code != c.want || panicked(out) || strings.TrimSpace(out) == "" {
			r.fail("dirlockd %q: exit %d, want %d with a message: %s", c.args, code, c.want, out)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		r.fail("a refused command line created %s/%s", dir, ents[0].Name())
	}
	noSegmentsDir(&r, "bad command lines", dir)
	r.Notes = fmt.Sprintf("%d command lines: exit 64 (status: 4), a message, no panic, nothing created", len(cases))
	return r
}
