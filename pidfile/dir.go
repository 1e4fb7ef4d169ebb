package pidfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
	"github.com/dirlockd/dirlockd/internal/users"
)

// dataDir is a data directory opened once. Every later step works on what
// this descriptor shows (its owner, mode and filesystem, the pidfile opened
// relative to it, the identity that segment headers name), never on the
// name looked up again: a name can be renamed, exchanged (renameat2
// RENAME_EXCHANGE) or replaced by a symbolic link between two looks by
// anyone who can write a directory on its path.
type dataDir struct {
	fd  int
	abs string // the cleaned absolute path, as the user gave it
	st  unix.Stat_t
}

// openDir opens dir (following its path as given, symbolic links included;
// O_PATH, which needs no permission on the directory itself beyond what the
// later openat of the pidfile needs) and checks it for use: a directory, owned as use demands, not writable by
// group or others, on a filesystem that keeps files, reached through no
// directory that somebody else may change (see checkPath). The caller
// closes it.
func openDir(dir string, use Use) (*dataDir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, &InvalidError{Path: dir, Problem: "cannot resolve path", Err: err}
	}
	fd, err := eintr.Openat(unix.AT_FDCWD, abs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	switch {
	case err == unix.ENOTDIR:
		if st, serr := os.Stat(abs); serr == nil && !st.IsDir() {
			return nil, &InvalidError{Path: abs, Problem: "data directory is not a directory"}
		}
		fallthrough
	case err != nil:
		fix := ""
		if err == unix.ENOENT {
			fix = "create it with: install -d -m 0700 " + abs
		}
		return nil, &InvalidError{Path: abs, Problem: "data directory not accessible", Fix: fix, Err: err}
	}
	d := &dataDir{fd: fd, abs: abs}
	if err := d.check(use); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func (d *dataDir) close() { unix.Close(d.fd) }

func (d *dataDir) owner() uint32 { return d.st.Uid }

func (d *dataDir) check(use Use) error {
	if err := unix.Fstat(d.fd, &d.st); err != nil {
		return &InvalidError{Path: d.abs, Problem: "cannot stat data directory", Err: err}
	}
	if err := checkOwner(d.abs, d.st.Uid, use); err != nil {
		return err
	}
	if d.st.Mode&0o022 != 0 {
		return &InvalidError{Path: d.abs,
			Problem: fmt.Sprintf("data directory is group- or world-writable (mode %04o)", d.st.Mode&0o7777),
			Fix:     "chmod go-w " + d.abs}
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(d.fd, &sfs); err != nil {
		return &InvalidError{Path: d.abs, Problem: "cannot statfs data directory", Err: err}
	}
	if name, ok := pseudoFS[int64(uint32(sfs.Type))]; ok {
		return &InvalidError{Path: d.abs,
			Problem: fmt.Sprintf("data directory is on %s, a pseudo filesystem of the kernel that keeps no files of ours", name),
			Fix:     "use a directory on a real filesystem, such as /var/lib/NAME or /srv/NAME"}
	}
	return checkPath(d.abs, d.st.Uid, &d.st)
}

// trustedOwners names root and owner, the users that may own the
// directories on a data directory's path.
func trustedOwners(owner uint32) string {
	if owner == 0 {
		return "root"
	}
	return "root or " + users.Login(owner)
}

// pseudoFS are the filesystems (statfs f_type) whose directories hold what
// the kernel shows, never a pidfile: check must say of them what run says.
var pseudoFS = map[int64]string{
	0x9fa0: "proc", 0x62656572: "sysfs", 0x27e0eb: "cgroup", 0x63677270: "cgroup2",
	0x1cd1: "devpts", 0x64626720: "debugfs", 0x74726163: "tracefs", 0x73636673: "securityfs",
	0xcafe4a11: "bpf", 0x6165676c: "pstore", 0xde5e81e4: "efivarfs", 0x62656570: "configfs",
	0x42494e4d: "binfmt_misc", 0x19800202: "mqueue", 0x6e736673: "nsfs",
}

// checkPath walks path as the kernel resolves it, symbolic links included,
// and refuses it when a directory in which a name is looked up may be
// changed by somebody other than root and owner (the data directory's
// owner): a directory owned by another user (who can always chmod it), or
// one writable by group or others without the sticky bit. That somebody
// could rename or exchange the names below it between any two looks, and
// turn the data directory into another one (sshd's StrictModes and
// systemd's chase with CHASE_SAFE refuse the same paths). A symbolic link
// in a sticky directory must be owned by root or owner too, as the kernel's
// protected_symlinks demands. want is the opened directory: the walk must
// end at it.
func checkPath(path string, owner uint32, want *unix.Stat_t) error {
	safe := func(dir string, st *unix.Stat_t) error {
		sticky := st.Mode&unix.S_ISVTX != 0
		switch {
		case st.Uid != 0 && st.Uid != owner:
			return &InvalidError{Path: path,
				Problem: fmt.Sprintf("the path to the data directory runs through %s, owned by %s, who could swap the data directory for another one",
					dir, users.Name(st.Uid)),
				Fix: fmt.Sprintf("use a data directory whose parent directories are owned by %s, or chown root %s", trustedOwners(owner), dir)}
		case st.Mode&0o022 != 0 && !sticky:
			return &InvalidError{Path: path,
				Problem: fmt.Sprintf("the path to the data directory runs through %s, which group or others may write (mode %04o), so they could swap the data directory for another one",
					dir, st.Mode&0o7777),
				Fix: "chmod go-w " + dir + " (or chmod +t, as /tmp is)"}
		}
		return nil
	}
	// cur is the directory the walk is in, and st its stat. A component
	// that is no link is lstat'ed once, and that answer serves when the
	// walk looks up the next name in it: one syscall a component.
	var st unix.Stat_t
	stat := func(dir string) error {
		if err := unix.Stat(dir, &st); err != nil {
			return &InvalidError{Path: path, Problem: "cannot stat " + dir, Err: err}
		}
		return nil
	}
	cur, rest, links := "/", strings.Split(path, "/"), 0
	if err := stat(cur); err != nil {
		return err
	}
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		if name == "" || name == "." {
			continue
		}
		if err := safe(cur, &st); err != nil {
			return err
		}
		if name == ".." {
			cur = filepath.Dir(cur)
			if err := stat(cur); err != nil {
				return err
			}
			continue
		}
		next := filepath.Join(cur, name)
		var lst unix.Stat_t
		if err := unix.Lstat(next, &lst); err != nil {
			return &InvalidError{Path: path, Problem: "cannot stat " + next, Err: err}
		}
		if lst.Mode&unix.S_IFMT != unix.S_IFLNK {
			cur, st = next, lst
			continue
		}
		if links++; links > 40 {
			return &InvalidError{Path: path, Problem: "too many symbolic links", Err: unix.ELOOP}
		}
		if st.Mode&unix.S_ISVTX != 0 && lst.Uid != 0 && lst.Uid != owner {
			return &InvalidError{Path: path,
				Problem: fmt.Sprintf("the path to the data directory follows the symbolic link %s, owned by %s, in a sticky directory", next, users.Name(lst.Uid)),
				Fix:     "give the real path of the data directory"}
		}
		target, err := os.Readlink(next)
		if err != nil {
			return &InvalidError{Path: path, Problem: "cannot read symbolic link " + next, Err: err}
		}
		if filepath.IsAbs(target) {
			cur = "/"
			if err := stat(cur); err != nil {
				return err
			}
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	if st.Dev != want.Dev || st.Ino != want.Ino {
		return &InvalidError{Path: path,
			Problem: "the data directory was replaced while it was checked (its path now leads to another directory)",
			Fix:     "try again; if it keeps happening, find what renames directories on its path"}
	}
	return nil
}
