package pidfile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// nobody is a uid and gid that is not ours.
const nobody = 65534

func pidPath(dir string) string { return filepath.Join(dir, DefaultName) }

// claim claims dir or fails the test; the File is closed when the test ends.
func claim(t *testing.T, dir string, opts Options) *File {
	t.Helper()
	f, err := Claim(dir, opts)
	if err != nil {
		t.Fatalf("Claim(%s, %v): %v", dir, opts.Method, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// kernelHold opens the pidfile of dir and locks it with m without telling
// the registry of held pidfiles, so that another File of this process meets
// the kernel's lock itself (the registry otherwise refuses it first).
func kernelHold(t *testing.T, dir string, m Method) *File {
	t.Helper()
	f, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.lock(m)
	if err != nil {
		f.Close()
		t.Fatalf("lock %v: %v", m, err)
	}
	f.method, f.locked = got, true
	t.Cleanup(func() { f.Close() })
	return f
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// wantHere fails the test unless err is the refusal of a pidfile this
// process holds.
func wantHere(t *testing.T, err error, path string) {
	t.Helper()
	var lh *LockedHereError
	if !errors.As(err, &lh) || !errors.Is(err, ErrLocked) || lh.PID != os.Getpid() || lh.Path != path {
		t.Fatalf("err = %v, want a *LockedHereError for %s naming PID %d", err, path, os.Getpid())
	}
}

// wantLocked fails the test unless err wraps ErrLocked and its message
// contains each of parts.
func wantLocked(t *testing.T, err error, parts ...string) {
	t.Helper()
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want one wrapping ErrLocked", err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}

// locksOn returns /proc/locks' entries on the file at path.
func locksOn(t *testing.T, path string) []proc.Lock {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	locks, err := proc.Locks(st.Dev, st.Ino)
	if err != nil {
		t.Fatal(err)
	}
	return locks
}

// snap is what the tests of refused pidfiles and data directories compare
// before and after, to show that the refusal left the object untouched.
type snap struct {
	Exists  bool
	Mode    fs.FileMode
	UID     uint32
	GID     uint32
	Ino     uint64
	Content string   // regular file
	Link    string   // symbolic link
	Entries []string // directory
}

func snapshot(t *testing.T, path string) snap {
	t.Helper()
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return snap{}
	}
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	s := snap{Exists: true, Mode: fi.Mode(), UID: st.Uid, GID: st.Gid, Ino: st.Ino}
	switch {
	case fi.Mode().IsRegular():
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s.Content = string(b)
	case fi.Mode()&fs.ModeSymlink != 0:
		if s.Link, err = os.Readlink(path); err != nil {
			t.Fatal(err)
		}
	case fi.IsDir():
		ents, err := os.ReadDir(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			s.Entries = append(s.Entries, e.Name())
		}
	}
	return s
}

func writeFile(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func TestOpenCreatesPrivateRegularFile(t *testing.T) {
	dir := testutil.DataDir(t)
	f, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := os.Lstat(pidPath(dir))
	if err != nil {
		t.Fatalf("Open did not create the pidfile: %v", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 || fi.Size() != 0 {
		t.Fatalf("new pidfile: mode %v size %d, want a regular empty file with mode 0600", fi.Mode(), fi.Size())
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != os.Geteuid() {
		t.Fatalf("new pidfile owned by uid %d, want %d", st.Uid, os.Geteuid())
	}
	if dev, ino := f.ID(); dev != st.Dev || ino != st.Ino {
		t.Fatalf("ID() = %d,%d, want %d,%d", dev, ino, st.Dev, st.Ino)
	}
	if f.Path() != pidPath(dir) || f.Dir() != dir {
		t.Fatalf("Path() = %q, Dir() = %q", f.Path(), f.Dir())
	}
	fd := f.OS().Fd()
	if fl, err := unix.FcntlInt(fd, unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Fatalf("pidfile descriptor flags %#x, %v: want close-on-exec", fl, err)
	}
	if fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 || fl&unix.O_ACCMODE != unix.O_RDWR {
		t.Fatalf("pidfile status flags %#x, %v: want O_RDWR without O_NONBLOCK", fl, err)
	}
}

func TestOpenExistingKeepsContent(t *testing.T) {
	dir := testutil.DataDir(t)
	f := claim(t, dir, Options{})
	rec := testRecord(os.Getpid(), "tok-keep")
	if err := f.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, pidPath(dir))

	g, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, raw, err := g.ReadRecord()
	if err != nil || !sameRecord(r, rec) || !bytes.Equal(raw, rec.Marshal()) {
		t.Fatalf("ReadRecord after Open = %+v, %q, %v; want the record written", r, raw, err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, pidPath(dir)); !reflect.DeepEqual(after, before) {
		t.Fatalf("Open changed the pidfile:\nbefore %+v\nafter  %+v", before, after)
	}
	if before.Content != string(rec.Marshal()) {
		t.Fatalf("pidfile content %q, want the record", before.Content)
	}
}

func TestOpenRefusesInvalid(t *testing.T) {
	euid := os.Geteuid()
	type setup struct {
		dir    string   // data directory to pass
		bad    string   // path the InvalidError must name
		keep   []string // paths that must be left as they are
		isKind func(fs.FileMode) bool
	}
	tests := []struct {
		name    string
		problem string
		fix     string // part of the Fix, "" for none
		errno   error  // what the InvalidError wraps, if anything
		setup   func(t *testing.T) setup
	}{
		{
			name:    "pidfile is a symlink",
			fix:     "remove the link: rm ",
			problem: "pidfile is a symbolic link; dirlockd does not follow links here",
			setup: func(t *testing.T) setup {
				dir := testutil.DataDir(t)
				target := filepath.Join(t.TempDir(), "target")
				writeFile(t, target, "precious\n", 0o600)
				if err := os.Symlink(target, pidPath(dir)); err != nil {
					t.Fatal(err)
				}
				return setup{dir, pidPath(dir), []string{pidPath(dir), target, dir},
					func(m fs.FileMode) bool { return m&fs.ModeSymlink != 0 }}
			},
		},
		{
			name:    "pidfile is a dangling symlink",
			fix:     "remove the link: rm ",
			problem: "pidfile is a symbolic link; dirlockd does not follow links here",
			setup: func(t *testing.T) setup {
				dir := testutil.DataDir(t)
				target := filepath.Join(t.TempDir(), "nothing-here")
				if err := os.Symlink(target, pidPath(dir)); err != nil {
					t.Fatal(err)
				}
				return setup{dir, pidPath(dir), []string{pidPath(dir), target, dir},
					func(m fs.FileMode) bool { return m&fs.ModeSymlink != 0 }}
			},
		},
		{
			name:    "pidfile is a directory",
			fix:     "remove or rename it",
			problem: "pidfile is a directory",
			setup: func(t *testing.T) setup {
				dir := testutil.DataDir(t)
				if err := os.Mkdir(pidPath(dir), 0o700); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(pidPath(dir), "inside"), "x", 0o600)
				return setup{dir, pidPath(dir), []string{pidPath(dir), dir}, fs.FileMode.IsDir}
			},
		},
		{
			name:    "pidfile is a FIFO",
			fix:     "remove it: it is not dirlockd's",
			problem: "pidfile is not a regular file",
			setup: func(t *testing.T) setup {
				dir := testutil.DataDir(t)
				if err := unix.Mkfifo(pidPath(dir), 0o600); err != nil {
					t.Fatal(err)
				}
				return setup{dir, pidPath(dir), []string{pidPath(dir), dir},
					func(m fs.FileMode) bool { return m&fs.ModeNamedPipe != 0 }}
			},
		},
		{
			name:    "pidfile owned by another uid",
			fix:     "run as its owner, or remove it",
			problem: fmt.Sprintf("pidfile is owned by uid %d, not by the effective uid %d", nobody, euid),
			setup: func(t *testing.T) setup {
				dir := testutil.DataDir(t)
				writeFile(t, pidPath(dir), string(testRecord(1234, "tok-other").Marshal()), 0o600)
				if err := os.Chown(pidPath(dir), nobody, nobody); err != nil {
					t.Fatal(err)
				}
				return setup{dir, pidPath(dir), []string{pidPath(dir), dir}, fs.FileMode.IsRegular}
			},
		},
		{
			name:    "pidfile mode 0666",
			fix:     "chmod 0600 ",
			problem: "pidfile is group- or world-writable (mode 0666)",
			setup: func(t *testing.T) setup {
				dir := testutil.DataDir(t)
				writeFile(t, pidPath(dir), string(testRecord(1234, "tok-0666").Marshal()), 0o666)
				return setup{dir, pidPath(dir), []string{pidPath(dir), dir}, fs.FileMode.IsRegular}
			},
		},
		{
			name:    "pidfile mode 0620",
			fix:     "chmod 0600 ",
			problem: "pidfile is group- or world-writable (mode 0620)",
			setup: func(t *testing.T) setup {
				dir := testutil.DataDir(t)
				writeFile(t, pidPath(dir), "", 0o620)
				return setup{dir, pidPath(dir), []string{pidPath(dir), dir}, fs.FileMode.IsRegular}
			},
		},
		{
			name:    "data directory missing",
			fix:     "create it with: install -d -m 0700 ",
			problem: "data directory not accessible",
			errno:   fs.ErrNotExist,
			setup: func(t *testing.T) setup {
				dir := filepath.Join(t.TempDir(), "missing")
				return setup{dir, dir, []string{dir}, nil}
			},
		},
		{
			name:    "data directory is a regular file",
			fix:     "",
			problem: "data directory is not a directory",
			setup: func(t *testing.T) setup {
				dir := filepath.Join(t.TempDir(), "file")
				writeFile(t, dir, "not a directory\n", 0o600)
				return setup{dir, dir, []string{dir}, fs.FileMode.IsRegular}
			},
		},
		{
			name:    "data directory mode 0770",
			fix:     "chmod go-w ",
			problem: "data directory is group- or world-writable (mode 0770)",
			setup: func(t *testing.T) setup {
				dir := testutil.DataDir(t)
				if err := os.Chmod(dir, 0o770); err != nil {
					t.Fatal(err)
				}
				return setup{dir, dir, []string{dir}, fs.FileMode.IsDir}
			},
		},
		{
			name:    "data directory owned by another uid",
			fix:     fmt.Sprintf("run as uid %d, or chown %d ", nobody, euid),
			problem: fmt.Sprintf("data directory is owned by uid %d, not by the effective uid %d", nobody, euid),
			setup: func(t *testing.T) setup {
				dir := testutil.DataDir(t)
				if err := os.Chown(dir, nobody, nobody); err != nil {
					t.Fatal(err)
				}
				return setup{dir, dir, []string{dir}, fs.FileMode.IsDir}
			},
		},
	}
	ops := []struct {
		name string
		fn   func(dir string) (gotSomething bool, err error)
	}{
		{"Open", func(dir string) (bool, error) {
			f, err := Open(dir, Options{})
			if f != nil {
				f.Close()
			}
			return f != nil, err
		}},
		{"Claim", func(dir string) (bool, error) {
			f, err := Claim(dir, Options{})
			if f != nil {
				f.Close()
			}
			return f != nil, err
		}},
		{"Read", func(dir string) (bool, error) {
			r, err := Read(dir, Options{})
			return r != nil, err
		}},
	}
	for _, tt := range tests {
		for _, op := range ops {
			t.Run(tt.name+"/"+op.name, func(t *testing.T) {
				s := tt.setup(t)
				if len(s.keep) == 0 {
					t.Fatal("test bug: nothing to keep")
				}
				before := make([]snap, len(s.keep))
				for i, p := range s.keep {
					before[i] = snapshot(t, p)
				}
				if s.isKind != nil && !s.isKind(before[0].Mode) {
					t.Fatalf("setup made %s with mode %v, not the kind this case is about", s.keep[0], before[0].Mode)
				}

				got, err := op.fn(s.dir)
				if got {
					t.Errorf("%s returned a result along with error %v", op.name, err)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("%s = %v, want an error wrapping ErrInvalid", op.name, err)
				}
				var ie *InvalidError
				if !errors.As(err, &ie) {
					t.Fatalf("%s = %T %v, want an *InvalidError", op.name, err, err)
				}
				if ie.Problem != tt.problem || ie.Path != s.bad {
					t.Fatalf("%s: Path %q Problem %q; want %q %q", op.name, ie.Path, ie.Problem, s.bad, tt.problem)
				}
				if !strings.Contains(err.Error(), tt.problem) || !strings.HasPrefix(err.Error(), s.bad+": ") {
					t.Fatalf("%s: message %q does not give the path and problem", op.name, err)
				}
				if !strings.Contains(ie.Fix, tt.fix) || (tt.fix == "") != (ie.Fix == "") || !strings.Contains(err.Error(), ie.Fix) {
					t.Fatalf("%s: message %q, Fix %q; want a fix containing %q", op.name, err, ie.Fix, tt.fix)
				}
				if tt.errno != nil && !errors.Is(err, tt.errno) {
					t.Fatalf("%s: %v does not wrap %v", op.name, err, tt.errno)
				}

				for i, p := range s.keep {
					if after := snapshot(t, p); !reflect.DeepEqual(after, before[i]) {
						t.Errorf("%s changed %s:\nbefore %+v\nafter  %+v", op.name, p, before[i], after)
					}
				}
			})
		}
	}
}

// TestOpenUnwritableDirAsOtherUser runs Open and Claim as uid 65534 on a
// data directory that uid owns: first with mode 0700, where both succeed,
// then with mode 0500, where both must fail with a permission error.
func TestOpenUnwritableDirAsOtherUser(t *testing.T) {
	// The test binary lives in a go-build directory only root can enter:
	// run a copy from a directory everyone can traverse.
	binDir := t.TempDir()
	root := filepath.Dir(binDir) // the test's own temp dir, made 0700
	for _, d := range []string{root, binDir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for d := filepath.Dir(root); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			t.Fatalf("%s (mode %v) is not traversable by uid %d: set TMPDIR elsewhere", d, fi.Mode(), nobody)
		}
		if d == "/" {
			break
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "pidfile.test")
	copyFile(t, exe, bin, 0o755)

	run := func(t *testing.T, dir string) []openReport {
		cmd := testutil.Command("open-as", dir)
		cmd.Path, cmd.Args[0], cmd.Dir = bin, bin, root
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
		}
		p := testutil.Start(t, cmd)
		var reps []openReport
		for range 2 {
			var rep openReport
			line := p.Expect(t, "result ")
			if err := json.Unmarshal([]byte(line), &rep); err != nil {
				t.Fatalf("helper printed %q: %v", line, err)
			}
			if rep.EUID != nobody {
				t.Fatalf("helper ran as euid %d, want %d", rep.EUID, nobody)
			}
			reps = append(reps, rep)
		}
		if code := p.Wait(); code != 0 {
			t.Fatalf("helper exited with %d", code)
		}
		return reps
	}
	mkdir := func(t *testing.T, mode fs.FileMode) string {
		base := t.TempDir()
		for _, d := range []string{filepath.Dir(base), base} { // the subtest's own temp dir is 0700
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		dir := filepath.Join(base, "data")
		if err := os.Mkdir(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		return dir
	}

	t.Run("writable", func(t *testing.T) {
		dir := mkdir(t, 0o700)
		for _, rep := range run(t, dir) {
			if !rep.OK {
				t.Fatalf("%s as uid %d on its own 0700 directory: %s", rep.Op, nobody, rep.Error)
			}
		}
		fi, err := os.Lstat(pidPath(dir))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody || fi.Mode().Perm() != 0o600 {
			t.Fatalf("pidfile created as uid %d: owner %d mode %v", nobody, st.Uid, fi.Mode())
		}
	})

	t.Run("unwritable", func(t *testing.T) {
		dir := mkdir(t, 0o500)
		before := snapshot(t, dir)
		for _, rep := range run(t, dir) {
			if rep.OK || !rep.Invalid || !rep.Permission {
				t.Fatalf("%s on a 0500 directory: %+v; want an ErrInvalid error wrapping EACCES", rep.Op, rep)
			}
			if rep.Problem != "cannot open pidfile" || rep.Path != pidPath(dir) {
				t.Fatalf("%s: Problem %q Path %q, want %q %q", rep.Op, rep.Problem, rep.Path, "cannot open pidfile", pidPath(dir))
			}
			for _, want := range []string{"permission denied", fmt.Sprintf("must be writable by uid %d", nobody)} {
				if !strings.Contains(rep.Error, want) {
					t.Fatalf("%s: error %q does not contain %q", rep.Op, rep.Error, want)
				}
			}
		}
		if after := snapshot(t, dir); !reflect.DeepEqual(after, before) {
			t.Fatalf("data directory changed: before %+v after %+v", before, after)
		}
	})
}

func copyFile(t *testing.T, src, dst string, mode fs.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, mode); err != nil {
		t.Fatal(err)
	}
}

func TestClaimExcludesSecondClaim(t *testing.T) {
	tests := []struct {
		method Method
		want   Method // method that holds the lock
	}{
		{Auto, Flock},
		{Flock, Flock},
		{OFD, OFD},
	}
	for _, tt := range tests {
		t.Run(tt.method.String(), func(t *testing.T) {
			dir := testutil.DataDir(t)
			path := pidPath(dir)
			opts := Options{Method: tt.method}
			a := kernelHold(t, dir, tt.method)
			if a.Method() != tt.want {
				t.Fatalf("Method() = %v, want %v", a.Method(), tt.want)
			}
			if h, err := a.Holders(); err != nil || !slices.Equal(h, []int{os.Getpid()}) {
				t.Fatalf("Holders() = %v, %v; want [%d]", h, err, os.Getpid())
			}

			b, err := Claim(dir, opts)
			if b != nil {
				b.Close()
				t.Fatal("second Claim returned a File")
			}
			wantLocked(t, err, fmt.Sprintf("%s (%s)", path, tt.want))
			if locks := locksOn(t, path); len(locks) != 1 {
				t.Fatalf("/proc/locks after a refused Claim: %+v, want only the holder's", locks)
			}

			// Unlock, and another File can claim it.
			if err := a.Unlock(); err != nil {
				t.Fatal(err)
			}
			c, err := Claim(dir, opts)
			if err != nil {
				t.Fatalf("Claim after Unlock: %v", err)
			}
			if c.Method() != tt.want {
				t.Fatalf("Method() = %v, want %v", c.Method(), tt.want)
			}
			if err := a.TryLock(tt.method); !errors.Is(err, ErrLocked) {
				t.Fatalf("TryLock while another File holds it: %v, want ErrLocked", err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}

			// Lock again, then Close releases.
			if err := a.TryLock(tt.method); err != nil {
				t.Fatalf("TryLock after the other File closed: %v", err)
			}
			_, err = Claim(dir, opts)
			wantLocked(t, err, path)
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			d, err := Claim(dir, opts)
			if err != nil {
				t.Fatalf("Claim after Close: %v", err)
			}
			d.Close()
			if locks := locksOn(t, path); len(locks) != 0 {
				t.Fatalf("/proc/locks after every File closed: %+v", locks)
			}
		})
	}
}

// TestPOSIXAcrossProcesses: POSIX locks never conflict within one process,
// so the holder is a helper.
func TestPOSIXAcrossProcesses(t *testing.T) {
	dir := testutil.DataDir(t)
	path := pidPath(dir)
	p := testutil.StartHelper(t, "hold", dir, "posix")
	p.Expect(t, "locked posix")

	_, err := Claim(dir, Options{Method: POSIX})
	wantLocked(t, err, path+" (posix)")
	_, err = Claim(dir, Options{Method: OFD})
	wantLocked(t, err, path+" (ofd)")
	// flock does not conflict with a POSIX lock: the mixed-family guard
	// must refuse.
	for _, m := range []Method{Auto, Flock} {
		_, err = Claim(dir, Options{Method: m})
		wantLocked(t, err, path, "another process, with an fcntl lock,", "must use the same lock method")
	}
	if locks := locksOn(t, path); len(locks) != 1 || locks[0].Kind != "POSIX" || locks[0].PID != p.PID() {
		t.Fatalf("/proc/locks: %+v, want only the helper's POSIX lock", locks)
	}
	r, err := Read(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != Held || !slices.Equal(r.Holders, []int{p.PID()}) {
		t.Fatalf("Read: %v holders %v, want held by [%d]", r.Outcome, r.Holders, p.PID())
	}

	p.Kill()
	f := claim(t, dir, Options{Method: POSIX})
	if f.Method() != POSIX {
		t.Fatalf("Method() = %v, want posix", f.Method())
	}
}

func TestMixedFamilyInProcess(t *testing.T) {
	self := fmt.Sprintf("PID %d, with a flock,", os.Getpid())
	tests := []struct {
		hold, try Method
		holdKind  string // /proc/locks kind of the holder's lock
		want      string
	}{
		{Flock, OFD, "FLOCK", self},
		{Flock, POSIX, "FLOCK", self},
		{OFD, Flock, "OFDLCK", "another process, with an fcntl lock,"},
		{OFD, Auto, "OFDLCK", "another process, with an fcntl lock,"},
	}
	for _, tt := range tests {
		t.Run(tt.hold.String()+"-then-"+tt.try.String(), func(t *testing.T) {
			dir := testutil.DataDir(t)
			path := pidPath(dir)
			h := kernelHold(t, dir, tt.hold)
			if h.Method() != tt.hold {
				t.Fatalf("holder Method() = %v", h.Method())
			}
			f, err := Claim(dir, Options{Method: tt.try})
			if f != nil {
				f.Close()
				t.Fatalf("Claim with %v while %v held succeeded", tt.try, tt.hold)
			}
			wantLocked(t, err, path, tt.want, "must use the same lock method")
			// A File that stays open after a refused TryLock must not keep
			// the lock it placed before it saw the other family's.
			o, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			wantLocked(t, o.TryLock(tt.try), path, tt.want)
			if locks := locksOn(t, path); len(locks) != 1 || locks[0].Kind != tt.holdKind {
				o.Close()
				t.Fatalf("/proc/locks after a refused TryLock: %+v, want only the holder's %s", locks, tt.holdKind)
			}
			o.Close()
			h.Close()
			g := claim(t, dir, Options{Method: tt.try})
			// Auto takes flock here; the others take what they ask for.
			if want := max(tt.try, Flock); g.Method() != want {
				t.Fatalf("Claim with %v once the holder closed: Method() = %v, want %v", tt.try, g.Method(), want)
			}
		})
	}
}

// TestInheritedLock: a helper locks the pidfile, hands the descriptor to
// /bin/sleep and exits. The sleep, which never heard of pidfiles, holds the
// data directory until it dies.
func TestInheritedLock(t *testing.T) {
	dir := testutil.DataDir(t)
	path := pidPath(dir)
	p := testutil.StartHelper(t, "inherit", dir)
	helperPID := p.PID()
	sleepPID, err := strconv.Atoi(p.Expect(t, "sleep "))
	if err != nil {
		t.Fatal(err)
	}
	start, err := proc.StartTime(sleepPID)
	if err != nil {
		t.Fatalf("sleep %d: %v", sleepPID, err)
	}
	// Not our child: kill it by PID, once we are sure it is still the
	// process the helper started.
	kill := func() {
		if proc.Alive(sleepPID, start) {
			syscall.Kill(sleepPID, syscall.SIGKILL)
		}
	}
	t.Cleanup(kill)
	// exec.Cmd.Start returns once the exec has closed its close-on-exec
	// pipe, which the kernel does a moment before it sets up the new
	// command line: an early read can find none.
	cmd := proc.Cmdline(sleepPID)
	for deadline := time.Now().Add(time.Second); cmd == "?" && time.Now().Before(deadline); cmd = proc.Cmdline(sleepPID) {
		time.Sleep(time.Millisecond)
	}
	if cmd != "/bin/sleep 60" {
		t.Fatalf("PID %d runs %q, want /bin/sleep 60", sleepPID, cmd)
	}
	if code := p.Wait(); code != 0 {
		t.Fatalf("helper exited with %d", code)
	}

	_, err = Claim(dir, Options{})
	wantLocked(t, err, path+" (flock)")
	f, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if h, err := f.Holders(); err != nil || !slices.Equal(h, []int{sleepPID}) {
		t.Fatalf("Holders() = %v, %v; want exactly [%d]", h, err, sleepPID)
	}
	r, err := Read(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != Held || !slices.Equal(r.Holders, []int{sleepPID}) {
		t.Fatalf("Read: %v, holders %v; want held by [%d]", r.Outcome, r.Holders, sleepPID)
	}
	if r.Record == nil || r.Record.PID != helperPID || r.Record.Token != "tok-inherit" {
		t.Fatalf("Read record %+v (err %v), want the helper's (PID %d)", r.Record, r.Err, helperPID)
	}

	kill()
	var g *File
	for deadline := time.Now().Add(5 * time.Second); ; {
		if g, err = Claim(dir, Options{}); err == nil {
			break
		}
		if !errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			t.Fatalf("Claim after killing the sleep: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.Close()
	r, err = Read(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != NotHeld || len(r.Holders) != 0 {
		t.Fatalf("Read after the sleep died: %v, holders %v; want not held", r.Outcome, r.Holders)
	}
}

func TestReadOutcomes(t *testing.T) {
	t.Run("NotExist", func(t *testing.T) {
		dir := testutil.DataDir(t)
		r, err := Read(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != NotExist || r.Record != nil || r.Raw != nil || r.Path != pidPath(dir) {
			t.Fatalf("Read: %+v, want NotExist at %s", r, pidPath(dir))
		}
		if _, err := os.Lstat(pidPath(dir)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Read created the pidfile: %v", err)
		}
	})

	t.Run("NotHeld with record", func(t *testing.T) {
		dir := testutil.DataDir(t)
		f := claim(t, dir, Options{})
		rec := testRecord(os.Getpid(), "tok-stale")
		if err := f.Write(rec); err != nil {
			t.Fatal(err)
		}
		dev, ino := f.ID()
		f.Close()
		r, err := Read(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != NotHeld || len(r.Holders) != 0 || r.Err != nil {
			t.Fatalf("Read: %v holders %v err %v, want NotHeld", r.Outcome, r.Holders, r.Err)
		}
		if !sameRecord(r.Record, rec) || !bytes.Equal(r.Raw, rec.Marshal()) {
			t.Fatalf("Read record %+v raw %q, want the one written", r.Record, r.Raw)
		}
		if r.Dev != dev || r.Ino != ino {
			t.Fatalf("Read Dev/Ino %d/%d, want %d/%d", r.Dev, r.Ino, dev, ino)
		}
	})

	t.Run("NotHeld empty", func(t *testing.T) {
		dir := testutil.DataDir(t)
		claim(t, dir, Options{}).Close()
		r, err := Read(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != NotHeld || r.Record != nil || len(r.Raw) != 0 || r.Err != nil {
			t.Fatalf("Read of an empty pidfile: %+v", r)
		}
	})

	t.Run("NotHeld malformed", func(t *testing.T) {
		dir := testutil.DataDir(t)
		content := "4242\nthis is not a record\n"
		writeFile(t, pidPath(dir), content, 0o600)
		r, err := Read(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != NotHeld || r.Record != nil {
			t.Fatalf("Read: %v record %+v, want NotHeld without a record", r.Outcome, r.Record)
		}
		if !errors.Is(r.Err, ErrMalformed) || !strings.Contains(r.Err.Error(), "no crc32c line") ||
			!strings.HasPrefix(r.Err.Error(), pidPath(dir)+": ") {
			t.Fatalf("Read Err = %v, want the path and ErrMalformed (no crc32c line)", r.Err)
		}
		if string(r.Raw) != content {
			t.Fatalf("Read Raw = %q, want %q", r.Raw, content)
		}
		if b, _ := os.ReadFile(pidPath(dir)); string(b) != content {
			t.Fatalf("Read changed the pidfile to %q", b)
		}
	})

	t.Run("Held by us", func(t *testing.T) {
		dir := testutil.DataDir(t)
		f := claim(t, dir, Options{Method: Flock})
		rec := testRecord(os.Getpid(), "tok-held")
		if err := f.Write(rec); err != nil {
			t.Fatal(err)
		}
		fds := openFDs(t)
		r, err := Read(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != Held || !slices.Equal(r.Holders, []int{os.Getpid()}) {
			t.Fatalf("Read: %v holders %v, want held by [%d]", r.Outcome, r.Holders, os.Getpid())
		}
		if !sameRecord(r.Record, rec) {
			t.Fatalf("Read record %+v, want %+v", r.Record, rec)
		}
		// Read only looked, through the holder's descriptor: the lock is
		// still ours, and no descriptor of the file was opened.
		_, err = Claim(dir, Options{})
		wantHere(t, err, pidPath(dir))
		if err := f.CheckLock(); err != nil {
			t.Fatal(err)
		}
		if after := openFDs(t); after != fds {
			t.Fatalf("%d descriptors open after Read and Claim, %d before", after, fds)
		}
	})
}

// TestConcurrentReaderNeverAcceptsTornRecord rewrites the record as fast as
// it can, alternating short and long ones, while reading it through another
// descriptor.
func TestConcurrentReaderNeverAcceptsTornRecord(t *testing.T) {
	dir := testutil.DataDir(t)
	w := claim(t, dir, Options{NoSync: true})
	written := map[string][]byte{} // token -> marshalled record
	padLen := map[string]int{}     // token -> length of its Extra["pad"]
	var recs []*Record
	for i := range 8 {
		n := 50
		if i%2 == 1 {
			n = 2000
		}
		tok := fmt.Sprintf("tok-%d-%d", i, n)
		r := testRecord(os.Getpid(), tok)
		r.Extra = map[string]string{"pad": strings.Repeat(string(rune('a'+i)), n)}
		recs = append(recs, r)
		written[tok], padLen[tok] = r.Marshal(), n
	}
	if err := w.Write(recs[0]); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	done := make(chan error, 1)
	var writes atomic.Int64
	go func() {
		for i := 1; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := w.Write(recs[i%len(recs)]); err != nil {
				done <- err
				return
			}
			writes.Add(1)
		}
	}()
	var once sync.Once
	halt := func() error {
		var err error
		once.Do(func() { close(stop); err = <-done })
		return err
	}
	t.Cleanup(func() { halt() })

	rf, err := os.Open(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()

	check := func(how string, r *Record, b []byte) {
		t.Helper()
		// The record accepted must be exactly one that was written; bytes
		// after its checksum line are a longer record's tail not yet
		// truncated, which Parse ignores by design.
		n, ok := padLen[r.Token]
		if !ok || len(r.Extra["pad"]) != n || !bytes.HasPrefix(b, written[r.Token]) {
			halt()
			t.Fatalf("%s accepted a record that was never written: token %q pad %d bytes:\n%q", how, r.Token, len(r.Extra["pad"]), b)
		}
	}
	var calls, accepted, refused, raws, torn int
	seen := map[int]int{} // pad length -> records accepted
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); {
		calls++
		r, b, err := readRecord(rf, w.Path())
		switch {
		case err != nil:
			// Only when two reads 1 ms apart saw the same torn content.
			if !errors.Is(err, ErrMalformed) {
				halt()
				t.Fatalf("readRecord: %v", err)
			}
			if refused++; refused == 1 {
				t.Logf("first refusal: %v (%d bytes)", err, len(b))
			}
		case r == nil:
			halt()
			t.Fatalf("readRecord found an empty pidfile (raw %q)", b)
		default:
			check("readRecord", r, b)
			accepted++
			seen[len(r.Extra["pad"])]++
		}

		raws++
		b, err = readAll(rf)
		if err != nil {
			halt()
			t.Fatal(err)
		}
		if r, err := Parse(b); err != nil {
			torn++
		} else {
			check("Parse", r, b)
		}
	}
	if err := halt(); err != nil {
		t.Fatalf("writer: %v", err)
	}
	t.Logf("%d writes; readRecord: %d calls, %d accepted (%v by pad length), %d refused; raw reads: %d, %d malformed (torn)",
		writes.Load(), calls, accepted, seen, refused, raws, torn)
	if calls < 2000 || writes.Load() < 2000 {
		t.Fatalf("only %d reads and %d writes: the race was not exercised", calls, writes.Load())
	}
	if seen[50] < 100 || seen[2000] < 100 {
		t.Fatalf("accepted records by pad length %v: want many of both short and long ones", seen)
	}
	// A refusal needs the writer stalled mid-write across two reads 1 ms
	// apart; without that retry every torn read would be refused.
	if refused > 10 && refused*2 > torn {
		t.Fatalf("readRecord refused %d reads while %d raw reads were torn: it does not retry past a writer", refused, torn)
	}
}

func TestWrite(t *testing.T) {
	t.Run("replaces the content exactly", func(t *testing.T) {
		dir := testutil.DataDir(t)
		f := claim(t, dir, Options{})
		long := testRecord(os.Getpid(), "tok-long")
		long.Extra["pad"] = strings.Repeat("L", 3000)
		short := testRecord(os.Getpid(), "tok-short")
		short.Extra = nil
		for _, rec := range []*Record{long, short, long, short} {
			if err := f.Write(rec); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(pidPath(dir))
			if err != nil {
				t.Fatal(err)
			}
			if want := rec.Marshal(); !bytes.Equal(b, want) {
				t.Fatalf("after Write(%s) the pidfile holds %d bytes, want exactly the %d of Marshal:\n%q", rec.Token, len(b), len(want), b)
			}
			r, raw, err := f.ReadRecord()
			if err != nil || !sameRecord(r, rec) || !bytes.Equal(raw, b) {
				t.Fatalf("ReadRecord after Write(%s): %+v, %v", rec.Token, r, err)
			}
		}
	})

	t.Run("needs the lock", func(t *testing.T) {
		dir := testutil.DataDir(t)
		f, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rec := testRecord(os.Getpid(), "tok-nolock")
		wantRefused := func(when string) {
			t.Helper()
			err := f.Write(rec)
			if err == nil || !strings.Contains(err.Error(), "write "+pidPath(dir)+": lock not held") {
				t.Fatalf("Write %s: %v, want %q", when, err, "lock not held")
			}
		}
		wantRefused("after Open")
		if err := f.TryLock(Auto); err != nil {
			t.Fatal(err)
		}
		if err := f.Write(rec); err != nil {
			t.Fatal(err)
		}
		if err := f.Unlock(); err != nil {
			t.Fatal(err)
		}
		wantRefused("after Unlock")
		if b, _ := os.ReadFile(pidPath(dir)); !bytes.Equal(b, rec.Marshal()) {
			t.Fatalf("pidfile holds %q, want the one record written under the lock", b)
		}
	})
}

// TestWriteRefusesSharedInode: a link made to a held pidfile stops Write
// from writing through the descriptor, which would change the linked file.
func TestWriteRefusesSharedInode(t *testing.T) {
	dir := testutil.DataDir(t)
	f := claim(t, dir, Options{})
	if err := f.Write(testRecord(os.Getpid(), "tok-1")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Link(pidPath(dir), link); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(link)
	err := f.Write(testRecord(os.Getpid(), "tok-2"))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "has 2 links") {
		t.Fatalf("Write with a second link: %v, want invalid, naming 2 links", err)
	}
	if after, _ := os.ReadFile(link); !bytes.Equal(before, after) {
		t.Fatalf("the linked file changed: %q -> %q", before, after)
	}
	os.Remove(link)
	if err := f.Write(testRecord(os.Getpid(), "tok-3")); err != nil {
		t.Fatalf("Write once the link is gone: %v", err)
	}
}

// TestOpenInDirRefuses: the files dirlockd writes besides the pidfile obey
// its rules.
func TestOpenInDirRefuses(t *testing.T) {
	cases := map[string]struct {
		setup func(t *testing.T, path, outside string)
		want  string
	}{
		"symlink":    {func(t *testing.T, path, outside string) { os.Symlink(outside, path) }, "symbolic link"},
		"hard link":  {func(t *testing.T, path, outside string) { os.Link(outside, path) }, "file has 2 links"},
		"name":       {nil, "not a file name inside the data directory"},
		"fifo":       {func(t *testing.T, path, _ string) { unix.Mkfifo(path, 0o600) }, "a FIFO"},
		"other user": {func(t *testing.T, path, _ string) { writeFile(t, path, "", 0o600); os.Chown(path, 65534, 65534) }, "owned by uid 65534"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			outside := filepath.Join(t.TempDir(), "outside")
			writeFile(t, outside, "keep\n", 0o600)
			file := "witness"
			if c.setup == nil {
				file = "../witness"
			} else {
				c.setup(t, filepath.Join(dir, file), outside)
			}
			f, err := OpenInDir(dir, file, os.O_WRONLY|os.O_APPEND|os.O_CREATE)
			if f != nil {
				f.Close()
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("OpenInDir: %v, want invalid mentioning %q", err, c.want)
			}
			if b, _ := os.ReadFile(outside); string(b) != "keep\n" {
				t.Fatalf("the file outside changed to %q", b)
			}
		})
	}
	dir := testutil.DataDir(t)
	f, err := OpenInDir(dir, "witness", os.O_WRONLY|os.O_CREATE)
	if err != nil {
		t.Fatalf("OpenInDir of a new file: %v", err)
	}
	f.Close()
}

// TestStrayDescriptorParked: a descriptor of a held inode that was opened
// anyway (a path swapped between the registry's lookup and the open) is
// parked on the holder instead of closed, so a POSIX lock survives, and is
// closed with the holder.
func TestStrayDescriptorParked(t *testing.T) {
	dir := testutil.DataDir(t)
	f := claim(t, dir, Options{Method: POSIX})
	fds := openFDs(t)
	fd, err := openRetry(pidPath(dir), unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := closeFile(os.NewFile(uintptr(fd), pidPath(dir)), f.dev, f.ino, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.CheckLock(); err != nil {
		t.Fatalf("CheckLock after a stray descriptor was closed: %v", err)
	}
	if got := openFDs(t); got != fds+1 {
		t.Fatalf("%d descriptors open, want %d (the stray one parked)", got, fds+1)
	}
	f.Close()
	if got := openFDs(t); got != fds-1 {
		t.Fatalf("%d descriptors open after the holder closed, want %d", got, fds-1)
	}
}

// lockWaitRuns is how many times each LockWait race below is repeated.
const lockWaitRuns = 100

// startLockWait runs f.LockWait(ctx, m) on a goroutine and delivers its
// result.
func startLockWait(ctx context.Context, f *File, m Method) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f.LockWait(ctx, m) }()
	return done
}

// waitFreeFor polls until this process has no more than fds descriptors
// open (an abandoned waiter has closed its own) and then checks that a
// fresh File of dir can take the lock, and releases it: nobody, an
// abandoned waiter included, kept the lock.
func waitFreeFor(t *testing.T, dir string, m Method, fds int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for openFDs(t) > fds {
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open 30s after every waiter was done or abandoned, %d before", openFDs(t), fds)
		}
		time.Sleep(time.Millisecond)
	}
	for {
		f, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = f.TryLock(m)
		f.Close()
		if err == nil {
			return
		}
		if !errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			t.Fatalf("the lock is still held 30s after every holder let go: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// A waiter blocked in the kernel gets the lock when the holder lets go,
// through a descriptor that then is the File's own.
func TestLockWaitHandsOver(t *testing.T) {
	for _, m := range []Method{Flock, OFD} {
		t.Run(m.String(), func(t *testing.T) {
			dir := t.TempDir()
			for range lockWaitRuns {
				h := kernelHold(t, dir, m)
				w, err := Open(dir, Options{})
				if err != nil {
					t.Fatal(err)
				}
				done := startLockWait(context.Background(), w, m)
				select {
				case err := <-done:
					t.Fatalf("LockWait returned %v while the lock was held", err)
				default:
				}
				h.Close()
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("LockWait still blocked 30s after the release")
				}
				if w.Method() != m {
					t.Errorf("method %v, want %v", w.Method(), m)
				}
				if err := w.CheckLock(); err != nil {
					t.Errorf("the kernel does not list the granted lock on the File's descriptor: %v", err)
				}
				if other, err := Open(dir, Options{}); err == nil {
					other.Close()
					t.Fatal("Open of a pidfile this process holds through LockWait succeeded")
				}
				w.Close()
			}
		})
	}
}

// A grant on an inode that the path no longer names (the pidfile renamed
// over, or removed) is ErrReplaced, and the old inode's lock is let go.
func TestLockWaitReplaced(t *testing.T) {
	for _, how := range []string{"renamed over", "removed"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			path := pidPath(dir)
			for range lockWaitRuns {
				h := kernelHold(t, dir, Flock)
				w, err := Open(dir, Options{})
				if err != nil {
					t.Fatal(err)
				}
				done := startLockWait(context.Background(), w, Auto)
				if how == "removed" {
					err = os.Remove(path)
				} else {
					writeFile(t, path+".new", "", 0o600)
					err = os.Rename(path+".new", path)
				}
				if err != nil {
					t.Fatal(err)
				}
				// Whether the waiter had blocked yet or not, it must
				// not hold the old inode.
				oldDev, oldIno := h.ID()
				h.Close()
				select {
				case err := <-done:
					if !errors.Is(err, ErrReplaced) {
						t.Fatalf("LockWait after the pidfile was %s: %v, want ErrReplaced", how, err)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("LockWait still blocked 30s after the release")
				}
				if w.locked {
					t.Fatal("File locked after ErrReplaced")
				}
				w.Close()
				// Nothing of this process keeps the old inode locked.
				for _, l := range locksOnID(t, oldDev, oldIno) {
					if l.PID == os.Getpid() {
						t.Fatalf("this process still holds a lock on the replaced inode: %+v", l)
					}
				}
			}
		})
	}
}

// locksOnID lists the kernel's locks on the inode (dev, ino).
func locksOnID(t *testing.T, dev, ino uint64) []proc.Lock {
	t.Helper()
	ls, err := proc.Locks(dev, ino)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// A cancelled LockWait returns at once; the abandoned goroutine, granted
// the lock afterwards, releases it and closes its descriptor at once, and
// writes nothing. Cancel and release also race each other: whichever wins,
// the lock ends up either with the File (LockWait returned nil) or with
// nobody.
func TestLockWaitCancel(t *testing.T) {
	for _, race := range []bool{false, true} {
		t.Run(fmt.Sprintf("race=%v", race), func(t *testing.T) {
			dir := t.TempDir()
			path := pidPath(dir)
			writeFile(t, path, "content\n", 0o600)
			fds := openFDs(t)
			granted := 0
			for i := range lockWaitRuns {
				h := kernelHold(t, dir, Flock)
				w, err := Open(dir, Options{})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := startLockWait(ctx, w, Flock)
				var err2 error
				switch {
				case race && i%2 == 0:
					go h.Close()
					cancel()
					err2 = <-done
				case race:
					// Spread the cancel over the waiter's way to
					// the grant.
					h.Close()
					for range i * 20 {
						runtime.Gosched()
					}
					cancel()
					err2 = <-done
				default:
					cancel()
					select {
					case err2 = <-done:
					case <-time.After(30 * time.Second):
						t.Fatal("LockWait still blocked 30s after its context was cancelled")
					}
					if !errors.Is(err2, context.Canceled) {
						t.Fatalf("cancelled LockWait: %v, want context.Canceled", err2)
					}
					h.Close()
				}
				if err2 == nil {
					granted++
					if err := w.CheckLock(); err != nil {
						t.Fatal(err)
					}
				} else if w.locked {
					t.Fatalf("File locked after LockWait failed: %v", err2)
				}
				w.Close()
				waitFreeFor(t, dir, Flock, fds)
			}
			if b, err := os.ReadFile(path); err != nil || string(b) != "content\n" {
				t.Errorf("pidfile holds %q (%v): an abandoned waiter wrote", b, err)
			}
			t.Logf("%d runs, %d granted before the cancel", lockWaitRuns, granted)
		})
	}
}

// LockWait does not block in the kernel for POSIX locks.
func TestLockWaitRefusesPOSIX(t *testing.T) {
	dir := t.TempDir()
	f, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.LockWait(context.Background(), POSIX); !errors.Is(err, ErrNoKernelWait) {
		t.Fatalf("LockWait(POSIX): %v, want ErrNoKernelWait", err)
	}
}
