package pidfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/internal/users"
)

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
		// lookOK: root may look at it (Read succeeds); only holding it
		// is refused.
		lookOK bool
		setup  func(t *testing.T) setup
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
			fix:     fmt.Sprintf("run as %s, or remove it", users.Login(nobody)),
			problem: fmt.Sprintf("pidfile is owned by %s, not by %s, who runs dirlockd", users.Name(nobody), users.Name(uint32(euid))),
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
			fix:     fmt.Sprintf("run dirlockd as %s, for example: runuser -u %s -- dirlockd", users.Login(nobody), users.Login(nobody)),
			problem: fmt.Sprintf("data directory is owned by %s; only its owner may hold it, and dirlockd runs as %s", users.Name(nobody), users.Name(uint32(euid))),
			lookOK:  euid == 0,
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
				if tt.lookOK && op.name == "Read" {
					return // TestRootLooks
				}
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
		"other user": {func(t *testing.T, path, _ string) { writeFile(t, path, "", 0o600); os.Chown(path, 65534, 65534) }, "(uid 65534)"},
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
