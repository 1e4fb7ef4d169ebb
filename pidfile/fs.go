package pidfile

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
)

// Filesystem describes the filesystem under a data directory as far as its
// file locks are concerned: whether other hosts may mount it, and whether the
// locks taken here reach them.
//
// The dangerous case is not an error. A filesystem without lock operations,
// or a network mount told to keep locks to itself (NFS "nolock" or
// "local_lock=", CIFS "nobrl"), grants every lock locally: the lock succeeds
// on each host and excludes nobody on the others. LocalOnly says when that is
// known from the mount options.
type Filesystem struct {
	Magic      int64    // statfs f_type
	Type       string   // mountinfo filesystem type: "ext4", "nfs4", "fuse.sshfs"; "" if not looked up
	Source     string   // mount source: "server:/export", "/dev/sda1"
	MountPoint string   // where it is mounted, as this process sees it
	Options    []string // per-mount and superblock options
}

// Filesystem magic numbers (statfs f_type) of the filesystems another host
// can mount.
const (
	magicNFS   = 0x6969
	magicFUSE  = 0x65735546
	magicSMB2  = 0xfe534d42
	magicCIFS  = 0xff534d42
	magicSMB   = 0x517b
	magicCeph  = 0x00c36400
	magic9P    = 0x01021997
	magicAFS   = 0x5346414f
	magicGFS2  = 0x01161970
	magicOCFS2 = 0x7461636f
)

var kinds = map[int64]string{
	magicNFS: "nfs", magicFUSE: "fuse", magicSMB2: "cifs", magicCIFS: "cifs", magicSMB: "cifs",
	magicCeph: "ceph", magic9P: "9p", magicAFS: "afs", magicGFS2: "gfs2", magicOCFS2: "ocfs2",
}

// StatFS describes the filesystem under path. Mount options are looked up in
// /proc/self/mountinfo only for shared filesystems: a local one's options say
// nothing about locks, and StatFS runs on every acquisition.
func StatFS(path string) (Filesystem, error) {
	fd, err := eintr.Openat(unix.AT_FDCWD, path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return Filesystem{}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	return statFD(fd, path)
}

// statFD is StatFS of the file open as fd (named path in errors): the
// filesystem of that very file, whatever its name leads to now.
func statFD(fd int, path string) (Filesystem, error) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return Filesystem{}, &os.PathError{Op: "fstatfs", Path: path, Err: err}
	}
	fs := Filesystem{Magic: int64(uint32(sfs.Type))}
	if !fs.Shared() {
		return fs, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fs, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fs, fmt.Errorf("read mount options of %s: %w", path, err)
	}
	// Where the descriptor's file is, as the kernel names it.
	real, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		real = path
	}
	if m, ok := findMount(b, unix.Major(st.Dev), unix.Minor(st.Dev), real); ok {
		fs.Type, fs.Source, fs.MountPoint, fs.Options = m.Type, m.Source, m.MountPoint, m.Options
	}
	return fs, nil
}

// findMount picks, from mountinfo content, the mount of device maj:min that
// contains path: the one with the longest mount point that is a prefix of
// path (bind mounts share a device), or failing that the last one listed.
func findMount(mountinfo []byte, maj, min uint32, path string) (Filesystem, bool) {
	dev := fmt.Sprintf("%d:%d", maj, min)
	var best Filesystem
	found, bestLen := false, -1
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		f := strings.Fields(sc.Text())
		sep := slices.Index(f, "-")
		if sep < 6 || len(f) < sep+4 || f[2] != dev {
			continue
		}
		mp := unescapeMount(f[4])
		n := -1
		if mp == "/" || path == mp || strings.HasPrefix(path, mp+"/") {
			n = len(mp)
		}
		// A later mount on the same point stacks over an earlier one.
		if found && n < bestLen {
			continue
		}
		found, bestLen = true, n
		best = Filesystem{
			Type:       f[sep+1],
			Source:     unescapeMount(f[sep+2]),
			MountPoint: mp,
			Options:    append(strings.Split(f[5], ","), strings.Split(f[sep+3], ",")...),
		}
	}
	return best, found
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Kind names the family of the filesystem: "nfs", "cifs", "fuse", "ceph",
// "9p", "afs", "gfs2", "ocfs2", or "local" for everything else.
func (fs Filesystem) Kind() string {
	if k, ok := kinds[fs.Magic]; ok {
		return k
	}
	return "local"
}

// Shared reports whether other hosts may mount this filesystem, so that the
// PIDs and segments of this host do not see every holder.
func (fs Filesystem) Shared() bool { return fs.Kind() != "local" }

// Option returns the value of mount option name ("" for a flag) and whether
// it is set. The last occurrence wins, as for mount(8).
func (fs Filesystem) Option(name string) (string, bool) {
	val, ok := "", false
	for _, o := range fs.Options {
		k, v, _ := strings.Cut(o, "=")
		if k == name {
			val, ok = v, true
		}
	}
	return val, ok
}

// NFSVersion returns the NFS protocol version from the mount options ("3",
// "4.2"), or "" if it is not NFS or does not say.
func (fs Filesystem) NFSVersion() string {
	if fs.Kind() != "nfs" {
		return ""
	}
	if v, ok := fs.Option("vers"); ok {
		return v
	}
	if v, ok := fs.Option("nfsvers"); ok {
		return v
	}
	if fs.Type == "nfs4" {
		return "4"
	}
	return ""
}

// LocalOnly returns why locks of kind m on this filesystem are known never to
// leave this host, or "" when they are not known to. Auto asks about every
// kind Auto might use: it is local-only when all of them are.
func (fs Filesystem) LocalOnly(m Method) string {
	if m == Auto {
		for _, k := range []Method{Flock, OFD, POSIX} {
			if fs.LocalOnly(k) == "" {
				return ""
			}
		}
		return fs.LocalOnly(Flock)
	}
	switch fs.Kind() {
	case "nfs":
		if _, ok := fs.Option("nolock"); ok {
			return "NFS mounted with nolock: every lock is kept by this client alone"
		}
		switch v, _ := fs.Option("local_lock"); v {
		case "all":
			return "NFS mounted with local_lock=all: every lock is kept by this client alone"
		case "flock":
			if m == Flock {
				return "NFS mounted with local_lock=flock: flock locks are kept by this client alone"
			}
		case "posix":
			if m != Flock {
				return "NFS mounted with local_lock=posix: fcntl locks are kept by this client alone"
			}
		}
	case "cifs":
		if _, ok := fs.Option("nobrl"); ok {
			return "CIFS/SMB mounted with nobrl: byte-range locks are not sent to the server"
		}
	}
	return ""
}

// Guarantee says in a sentence what the locks of kind m are worth here, for
// a log line; "" on a local filesystem, where the kernel's word is final.
func (fs Filesystem) Guarantee(m Method) string {
	if r := fs.LocalOnly(m); r != "" {
		return r + "; another host that mounts it is not excluded"
	}
	where := fs.Type
	if fs.Source != "" {
		where += " " + fs.Source
	}
	switch fs.Kind() {
	case "local":
		return ""
	case "nfs":
		if v := fs.NFSVersion(); strings.HasPrefix(v, "4") {
			return fmt.Sprintf("NFSv%s (%s): the server keeps the lock as long as this client renews its lease; a client cut off for longer loses it, and the next write through it fails with EIO, which the recheck turns into the lost-lock action", v, where)
		}
		return fmt.Sprintf("NFS (%s, version %s): locks go through NLM, which needs rpc.statd on client and server; a lock lost to a server reboot is not reported, so the heartbeat takeover rule guards restarts", where, fs.NFSVersion())
	case "cifs":
		return fmt.Sprintf("CIFS/SMB (%s): the server enforces byte-range locks; flock is emulated with one since Linux 5.5", where)
	case "fuse":
		return fmt.Sprintf("FUSE (%s): locks reach other clients only if the filesystem implements them; run dirlockd stress from every client to find out", where)
	}
	return fmt.Sprintf("%s (%s): a shared filesystem; whether its locks reach other hosts depends on it: run dirlockd stress from every client to find out", fs.Kind(), where)
}
