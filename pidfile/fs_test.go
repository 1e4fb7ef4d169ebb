package pidfile

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

const mountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
40 22 0:45 / /srv/data rw,relatime shared:20 - nfs4 fs1:/export/data rw,vers=4.2,rsize=1048576,hard,proto=tcp,local_lock=none,addr=10.0.0.5
41 22 0:46 / /srv/old rw,relatime shared:21 - nfs fs2:/old rw,vers=3,nolock,proto=tcp,local_lock=all,addr=10.0.0.6
42 22 0:47 / /srv/flock rw shared:22 - nfs fs3:/f rw,vers=3,local_lock=flock
43 22 0:48 / /mnt/smb\040share rw shared:23 - cifs //nas/share rw,vers=3.1.1,nobrl
44 22 0:45 /export/data/sub /var/lib/bound rw,relatime shared:20 - nfs4 fs1:/export/data rw,vers=4.2
45 22 0:49 / /mnt/stack rw shared:24 - tmpfs tmpfs rw
46 45 0:49 / /mnt/stack rw shared:25 - fuse.sshfs host:/ rw,user_id=0
`

func TestFindMount(t *testing.T) {
	for _, c := range []struct {
		dev        string
		path       string
		mountPoint string
		typ        string
		source     string
	}{
		{"8:1", "/var/lib/x", "/", "ext4", "/dev/sda1"},
		{"0:45", "/srv/data/pg", "/srv/data", "nfs4", "fs1:/export/data"},
		{"0:45", "/var/lib/bound/pg", "/var/lib/bound", "nfs4", "fs1:/export/data"},
		{"0:48", "/mnt/smb share/db", "/mnt/smb share", "cifs", "//nas/share"},
		{"0:49", "/mnt/stack/d", "/mnt/stack", "fuse.sshfs", "host:/"}, // the later of two stacked mounts
		{"0:45", "/elsewhere", "/var/lib/bound", "nfs4", "fs1:/export/data"},
	} {
		var maj, min uint32
		if _, err := fmt.Sscanf(c.dev, "%d:%d", &maj, &min); err != nil {
			t.Fatal(err)
		}
		m, ok := findMount([]byte(mountinfo), maj, min, c.path)
		if !ok || m.MountPoint != c.mountPoint || m.Type != c.typ || m.Source != c.source {
			t.Errorf("findMount(%s, %s) = %+v, %v; want mount point %q type %q source %q", c.dev, c.path, m, ok, c.mountPoint, c.typ, c.source)
		}
	}
	if m, ok := findMount([]byte(mountinfo), 9, 9, "/x"); ok {
		t.Errorf("findMount of an unknown device = %+v, want not found", m)
	}
}

func TestLocalOnly(t *testing.T) {
	fsOf := func(magic int64, typ string, opts ...string) Filesystem {
		return Filesystem{Magic: magic, Type: typ, Options: opts}
	}
	type want struct{ flock, ofd, posix, auto bool }
	for _, c := range []struct {
		name string
		fs   Filesystem
		want want
	}{
		{"ext4", fsOf(0xef53, "ext4", "rw", "nolock"), want{}},
		{"nfs4 plain", fsOf(magicNFS, "nfs4", "rw", "vers=4.2", "local_lock=none"), want{}},
		{"nfs3 nolock", fsOf(magicNFS, "nfs", "rw", "vers=3", "nolock"), want{true, true, true, true}},
		{"nfs local_lock=all", fsOf(magicNFS, "nfs", "vers=3", "local_lock=all"), want{true, true, true, true}},
		{"nfs local_lock=flock", fsOf(magicNFS, "nfs", "vers=3", "local_lock=flock"), want{flock: true}},
		{"nfs local_lock=posix", fsOf(magicNFS, "nfs", "vers=3", "local_lock=posix"), want{ofd: true, posix: true}},
		{"nfs last option wins", fsOf(magicNFS, "nfs", "local_lock=all", "local_lock=none"), want{}},
		{"cifs", fsOf(magicCIFS, "cifs", "rw"), want{}},
		{"smb2 nobrl", fsOf(magicSMB2, "cifs", "rw", "nobrl"), want{true, true, true, true}},
		{"fuse", fsOf(magicFUSE, "fuse.sshfs", "rw"), want{}},
	} {
		got := want{c.fs.LocalOnly(Flock) != "", c.fs.LocalOnly(OFD) != "", c.fs.LocalOnly(POSIX) != "", c.fs.LocalOnly(Auto) != ""}
		if got != c.want {
			t.Errorf("%s: local-only flock/ofd/posix/auto = %+v, want %+v", c.name, got, c.want)
		}
		if g := c.fs.Guarantee(Auto); (g == "") != (c.fs.Kind() == "local") {
			t.Errorf("%s: Guarantee = %q", c.name, g)
		}
	}
}

func TestNFSVersion(t *testing.T) {
	for _, c := range []struct {
		fs   Filesystem
		want string
	}{
		{Filesystem{Magic: magicNFS, Type: "nfs4", Options: []string{"vers=4.1"}}, "4.1"},
		{Filesystem{Magic: magicNFS, Type: "nfs", Options: []string{"nfsvers=3"}}, "3"},
		{Filesystem{Magic: magicNFS, Type: "nfs4"}, "4"},
		{Filesystem{Magic: 0xef53, Type: "ext4", Options: []string{"vers=4"}}, ""},
	} {
		if got := c.fs.NFSVersion(); got != c.want {
			t.Errorf("NFSVersion(%+v) = %q, want %q", c.fs, got, c.want)
		}
	}
}

// TestStatFSTmpfs mounts a real tmpfs: a local filesystem, whose mount
// options StatFS does not need to read.
func TestStatFSTmpfs(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs (tests run as root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	fs, err := StatFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fs.Magic != unix.TMPFS_MAGIC || fs.Kind() != "local" || fs.Shared() || fs.LocalOnly(Auto) != "" {
		t.Errorf("StatFS(tmpfs) = %+v (kind %s)", fs, fs.Kind())
	}
	f, err := Claim(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Method() != Flock {
		t.Errorf("Auto on tmpfs took %v, want flock", f.Method())
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/a\040b`: "/mnt/a b", `/x\134y`: `/x\y`, `/plain`: "/plain", `/trail\04`: `/trail\04`, `\011tab`: "\ttab",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

// OpenInDir keeps the status flags it was asked for once it drops the
// O_NONBLOCK of its open: an O_APPEND file still appends (the stress
// witness log relies on it).
func TestOpenInDirKeepsAppend(t *testing.T) {
	dir := t.TempDir()
	for i := range 3 {
		f, err := OpenInDir(dir, "log", os.O_WRONLY|os.O_APPEND|os.O_CREATE)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte{'a' + byte(i)}); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if b, err := os.ReadFile(filepath.Join(dir, "log")); err != nil || string(b) != "abc" {
		t.Fatalf("log holds %q (%v), want \"abc\"", b, err)
	}
}
