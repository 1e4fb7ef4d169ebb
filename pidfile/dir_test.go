package pidfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

// TestPathThroughOthersDirectory: a data directory whose path runs through a
// directory that somebody other than root and the directory's owner may
// change is refused, by every operation, with the directory named; sticky
// directories (as /tmp) and the owner's own directories are fine, and so are
// symbolic links that root or the owner made.
func TestPathThroughOthersDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root, as CI runs it: it chowns directories")
	}
	mk := func(t *testing.T, parentUID int, parentMode os.FileMode) (parent, data string) {
		t.Helper()
		parent = filepath.Join(t.TempDir(), "P")
		if err := os.Mkdir(parent, 0o755); err != nil {
			t.Fatal(err)
		}
		data = filepath.Join(parent, "data")
		if err := os.Mkdir(data, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(parent, parentUID, parentUID); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(parent, parentMode); err != nil {
			t.Fatal(err)
		}
		return parent, data
	}
	refused := func(t *testing.T, data, want string) {
		t.Helper()
		for what, op := range map[string]func() error{
			"Open": func() error {
				f, err := Open(data, Options{})
				if err == nil {
					f.Close()
				}
				return err
			},
			"Read":     func() error { _, err := Read(data, Options{}); return err },
			"CheckDir": func() error { _, _, err := CheckDir(data, ForStart); return err },
		} {
			err := op()
			var ie *InvalidError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), want) {
				t.Errorf("%s(%s): %v; want invalid, mentioning %q", what, data, err, want)
			}
		}
		if _, err := os.Lstat(pidPath(data)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused operation created %s: %v", pidPath(data), err)
		}
	}

	t.Run("parent owned by another user", func(t *testing.T) {
		parent, data := mk(t, nobody, 0o755)
		refused(t, data, "runs through "+parent+", owned by ")
	})
	t.Run("parent group-writable", func(t *testing.T) {
		parent, data := mk(t, 0, 0o775)
		refused(t, data, "runs through "+parent+", which group or others may write (mode 0775)")
	})
	t.Run("symbolic link through another user's directory", func(t *testing.T) {
		// The link is root's, in a sound directory; its target runs
		// through a directory of nobody's.
		_, data := mk(t, nobody, 0o755)
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(data, link); err != nil {
			t.Fatal(err)
		}
		refused(t, link, "owned by ")
	})
	t.Run("another user's link in a sticky directory", func(t *testing.T) {
		_, data := mk(t, 0, 0o755)
		sticky := filepath.Join(t.TempDir(), "sticky")
		if err := os.Mkdir(sticky, 0o777|os.ModeSticky); err != nil {
			t.Fatal(err)
		}
		os.Chmod(sticky, 0o777|os.ModeSticky)
		link := filepath.Join(sticky, "link")
		if err := os.Symlink(data, link); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(link, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		refused(t, link, "follows the symbolic link "+link)
	})

	t.Run("sound paths", func(t *testing.T) {
		// A sticky world-writable parent (as /tmp), a parent of the
		// directory's owner, and root's link to it are all fine.
		sticky := filepath.Join(t.TempDir(), "sticky")
		if err := os.Mkdir(sticky, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(sticky, 0o777|os.ModeSticky); err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(sticky, "data")
		if err := os.Mkdir(data, 0o700); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink("../"+filepath.Base(filepath.Dir(sticky))+"/sticky/data", link); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{data, link, testutil.DataDir(t)} {
			f, err := Open(d, Options{})
			if err != nil {
				t.Errorf("Open(%s): %v", d, err)
				continue
			}
			f.Close()
		}
		// The directory's owner may own the directories above it.
		_, own := mk(t, nobody, 0o755)
		if err := os.Chown(own, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		if r, err := Read(own, Options{}); err != nil || r.Outcome != NotExist || r.DirOwner != nobody {
			t.Errorf("Read as root of nobody's directory in nobody's parent: %+v, %v", r, err)
		}
	})
}

// TestPseudoFilesystem: check refuses the kernel's pseudo filesystems as
// run does, naming them.
func TestPseudoFilesystem(t *testing.T) {
	for _, d := range []string{"/proc", "/sys"} {
		_, err := Read(d, Options{})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "pseudo filesystem") {
			t.Errorf("Read(%s): %v; want invalid, a pseudo filesystem", d, err)
		}
	}
}

// TestOpenDirIdentity: the identity of the directory comes from the
// descriptor the pidfile was opened through.
func TestOpenDirIdentity(t *testing.T) {
	dir := testutil.DataDir(t)
	f, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if dev, ino := f.DirID(); dev != st.Dev || ino != st.Ino || f.DirOwner() != st.Uid || f.Owner() != uint32(os.Geteuid()) {
		t.Errorf("DirID %d:%d owner %d, pidfile owner %d; want %d:%d, %d, %d", dev, ino, f.DirOwner(), f.Owner(), st.Dev, st.Ino, st.Uid, os.Geteuid())
	}
}
