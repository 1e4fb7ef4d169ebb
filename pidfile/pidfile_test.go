package pidfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/internal/users"
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

// TestRootLooks: root may look at a directory owned by a service user
// (issue 18: boot scripts and monitoring run as root), and learns who owns
// the directory and the pidfile; it may not hold it, and the refusal names
// the owner and never advises a chown to root.
func TestRootLooks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root, as CI runs it")
	}
	dir := testutil.DataDir(t)
	writeFile(t, pidPath(dir), string(testRecord(1234, "tok-nobody").Marshal()), 0o600)
	for _, p := range []string{pidPath(dir), dir} {
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Read(dir, Options{})
	if err != nil {
		t.Fatalf("Read as root of a directory owned by uid %d: %v", nobody, err)
	}
	if r.Outcome != NotHeld || r.Record == nil || r.Owner != nobody || r.DirOwner != nobody {
		t.Fatalf("Read = outcome %v record %v owner %d dir owner %d; want not held, the record, owners %d", r.Outcome, r.Record, r.Owner, r.DirOwner, nobody)
	}
	_, err = Open(dir, Options{})
	var ie *InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("Open as root of a directory owned by uid %d: %v; want an *InvalidError", nobody, err)
	}
	if !strings.Contains(err.Error(), users.Name(nobody)) || strings.Contains(err.Error(), "chown") {
		t.Fatalf("Open: %q; want the owner named (%s) and no chown advice", err, users.Name(nobody))
	}

}
