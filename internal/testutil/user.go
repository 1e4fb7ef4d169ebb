package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// User is an unprivileged user a test created: the other local user of
// the threat model (docs/design.md), whose files, processes and datagrams
// the kernel attributes to it.
type User struct {
	Name     string
	UID, GID int
	// exe is a copy of the test binary that the user may run, for
	// helpers.
	exe string
}

// NewUser creates a user named prefix plus a random suffix with useradd
// (no home, no login shell, a group of its own), and removes it with
// userdel when the test ends. It needs root, as CI runs.
func NewUser(t testing.TB, prefix string) *User {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	// useradd fails with status 10 while another useradd or userdel
	// holds /etc/passwd's lock: tests of other packages may run beside.
	retry := func(args ...string) error {
		var err error
		for i := 0; i < 20; i++ {
			var out []byte
			if out, err = exec.Command(args[0], args[1:]...).CombinedOutput(); err == nil {
				return nil
			} else if !strings.Contains(string(out), "lock") {
				t.Logf("%s: %s", strings.Join(args, " "), out)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		return err
	}
	if err := retry("useradd", "-M", "-U", "-s", "/usr/sbin/nologin", name); err != nil {
		t.Fatalf("useradd %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := retry("userdel", name); err != nil {
			t.Errorf("userdel %s: %v", name, err)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &User{Name: name, UID: uid, GID: gid}
}

// Chown gives path (not a symlink's target) to the user.
func (u *User) Chown(t testing.TB, path string) {
	t.Helper()
	if err := os.Lchown(path, u.UID, u.GID); err != nil {
		t.Fatal(err)
	}
}

// Dir makes a directory owned by the user under parent, mode 0755.
func (u *User) Dir(t testing.TB, parent, name string) string {
	t.Helper()
	d := filepath.Join(parent, name)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	u.Chown(t, d)
	return d
}

// Command prepares the test binary to run helper name with args as the
// user. The user runs a copy of the binary, in a directory it may enter
// (the test's own temporary directories are root's alone), removed when
// the test ends.
func (u *User) Command(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	if u.exe == "" {
		dir, err := os.MkdirTemp("/tmp", u.Name+"-bin")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		u.exe = filepath.Join(dir, "helper")
		if err := copyFile(self, u.exe, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(u.exe, args...)
	cmd.Env = append(os.Environ(), HelperEnv+"="+name)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID)}}
	return cmd
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
