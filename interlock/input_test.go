package interlock_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// TestBadPidfileContent: whatever garbage the pidfile holds, a free lock and
// no survivors mean a safe takeover, with the garbage reported.
func TestBadPidfileContent(t *testing.T) {
	valid := (&pidfile.Record{PID: 123, DataDir: "/x", StartTime: time.Unix(1, 0), ShmKey: 0, ShmID: -1,
		Status: pidfile.Ready, Token: "t", Version: 1}).Marshal()
	cases := map[string][]byte{
		"empty":            {},
		"garbage":          []byte("not a pidfile\n"),
		"binary":           {0, 1, 2, 0xff, 0xfe, '\n', 0},
		"truncated":        valid[:len(valid)/2],
		"oversized":        bytes.Repeat([]byte("1234567\n"), 128<<10),
		"zero pid":         []byte("0\n"),
		"negative pid":     []byte("-5\n"),
		"huge pid":         []byte("99999999999999999999\n"),
		"crlf":             bytes.ReplaceAll(valid, []byte("\n"), []byte("\r\n")),
		"no pid line":      valid[bytes.IndexByte(valid, '\n')+1:],
		"postgres pidfile": []byte("4242\n/var/lib/postgresql/data\n1700000000\n5432\n/tmp\n*\n  5432001      32768\nready   \n"),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			path := filepath.Join(dir, pidfile.DefaultName)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			rep, err := interlock.Inspect(dir, interlock.Options{})
			if err != nil || rep.State != interlock.Stale || !errors.Is(rep.RecordErr, pidfile.ErrMalformed) {
				t.Fatalf("Inspect: %+v, %v; want stale with a malformed record", rep, err)
			}
			l := acquire(t, dir, interlock.Options{})
			p := l.Previous()
			if p == nil || p.Record != nil || !errors.Is(p.Err, pidfile.ErrMalformed) {
				t.Fatalf("Previous = %+v, want the malformed content reported", p)
			}
			wantRaw := content
			if len(wantRaw) > pidfile.MaxSize {
				wantRaw = wantRaw[:pidfile.MaxSize+1]
			}
			if !bytes.Equal(p.Raw, wantRaw) {
				t.Errorf("Previous.Raw has %d bytes, want %d", len(p.Raw), len(wantRaw))
			}
			if r := readRecord(t, dir); r.PID != os.Getpid() {
				t.Errorf("new record names %d", r.PID)
			}
		})
	}
}

func TestInvalidDataDirectory(t *testing.T) {
	mk := func(t *testing.T, setup func(dir, path string) error) string {
		dir := testutil.DataDir(t)
		if err := setup(dir, filepath.Join(dir, pidfile.DefaultName)); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	cases := []struct {
		name  string
		setup func(dir, path string) error
		want  string
	}{
		{"missing", func(dir, _ string) error { return os.Remove(dir) }, "install -d -m 0700"},
		{"not a directory", func(dir, _ string) error {
			os.Remove(dir)
			return os.WriteFile(dir, nil, 0o600)
		}, "not a directory"},
		{"group-writable", func(dir, _ string) error { return os.Chmod(dir, 0o770) }, "chmod go-w"},
		{"other owner", func(dir, _ string) error { return os.Chown(dir, 65534, 65534) }, "uid 65534)"},
		{"pidfile symlink", func(dir, path string) error {
			os.WriteFile(dir+"/target", []byte("keep"), 0o600)
			return os.Symlink(dir+"/target", path)
		}, "symbolic link"},
		{"pidfile directory", func(_, path string) error { return os.Mkdir(path, 0o700) }, "is a directory"},
		{"pidfile fifo", func(_, path string) error { return unix.Mkfifo(path, 0o600) }, "not a regular file"},
		{"pidfile other owner", func(_, path string) error {
			os.WriteFile(path, nil, 0o600)
			return os.Chown(path, 65534, 65534)
		}, "uid 65534)"},
		{"pidfile world-writable", func(_, path string) error {
			os.WriteFile(path, nil, 0o600)
			return os.Chmod(path, 0o666)
		}, "chmod 0600"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := mk(t, c.setup)
			path := filepath.Join(dir, pidfile.DefaultName)
			before, _ := os.Lstat(path)
			_, err := interlock.Acquire(context.Background(), dir, interlock.Options{})
			var ie *pidfile.InvalidError
			if !errors.Is(err, interlock.ErrInvalid) || !errors.As(err, &ie) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Acquire: %v; want invalid, mentioning %q", err, c.want)
			}
			rep, err := interlock.Inspect(dir, interlock.Options{})
			switch {
			case c.name == "other owner" && os.Geteuid() == 0:
				// Root may look at a service user's directory.
				if err != nil || rep.State != interlock.Free || rep.DirOwner != 65534 {
					t.Errorf("Inspect as root: %+v, %v; want free, owned by 65534", rep, err)
				}
			case !errors.Is(err, interlock.ErrInvalid):
				t.Errorf("Inspect: %v, want invalid", err)
			}
			after, _ := os.Lstat(path)
			if (before == nil) != (after == nil) || before != nil && (before.Mode() != after.Mode() || !os.SameFile(before, after)) {
				t.Errorf("the offending pidfile was changed: %v -> %v", before, after)
			}
			if c.name == "pidfile symlink" {
				if b, _ := os.ReadFile(dir + "/target"); string(b) != "keep" {
					t.Errorf("symlink target now holds %q", b)
				}
			}
		})
	}
}
