package supervise

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
)

// --main-pid-file is written by the server, which may run as an
// unprivileged user, and read by dirlockd, which is often root. It is read
// as systemd reads PIDFile=:
//
//   - its path is followed one name at a time (systemd's chase with
//     CHASE_SAFE), and refused where it passes from a directory of one
//     user other than root to something another user owns: that user could
//     have put a symlink, or a hard link, to a file only root may read
//     there (the server's user linking its pidfile to /etc/shadow, say);
//   - it is opened without blocking (a FIFO there would stop the
//     supervisor, signals and all) and must be a regular file (/dev/zero
//     would fill its memory);
//   - only its first maxMainPIDFile bytes are read;
//   - a file refused, or a content that is not a PID, is never logged: it
//     may be that root-only file.

// maxMainPIDFile is the most of --main-pid-file that is read. A PID takes
// at most 7 digits; systemd reads a line of at most a few KiB too.
const maxMainPIDFile = 4096

// maxSymlinks is the kernel's limit on symlinks followed in one lookup.
const maxSymlinks = 40

// pidMaxLimit is the largest PID the kernel can hand out (PID_MAX_LIMIT).
const pidMaxLimit = 1 << 22

var (
	errMainPIDEmpty   = errors.New("empty (still being written?)")
	errMainPIDNotPID  = errors.New("its first line is not a PID")
	errMainPIDTooLong = fmt.Errorf("its first line is longer than %d bytes", maxMainPIDFile)
)

// readMainPID opens path as openMainPIDFile does and returns the PID its
// first line names.
func readMainPID(path string) (int, error) {
	f, err := openMainPIDFile(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b := make([]byte, maxMainPIDFile+1)
	n, err := io.ReadFull(f, b)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return parseMainPID(b[:n])
}

// parseMainPID returns the PID that b's first line names: decimal digits,
// with spaces around them allowed (pidfiles end in a newline, some start with
// a space), a PID the kernel can hand out. b is at most maxMainPIDFile+1
// bytes of the file's beginning: a first line that does not end within
// maxMainPIDFile bytes is refused.
func parseMainPID(b []byte) (int, error) {
	line, _, found := bytes.Cut(b, []byte("\n"))
	if !found && len(b) > maxMainPIDFile {
		return 0, errMainPIDTooLong
	}
	s := strings.TrimSpace(string(line))
	if s == "" {
		return 0, errMainPIDEmpty
	}
	if strings.TrimLeft(s, "0123456789") != "" {
		return 0, errMainPIDNotPID
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 || pid > pidMaxLimit {
		return 0, errMainPIDNotPID
	}
	return pid, nil
}

// openMainPIDFile opens path, absolute, for reading as systemd's chase
// with CHASE_SAFE would: one name at a time, symlinks followed by hand,
// each step refused if it leads from something a user other than root
// owns to something another user owns. The file must be a regular one; it
// is opened with O_NONBLOCK.
func openMainPIDFile(path string) (*os.File, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("%s: not an absolute path", path)
	}
	cur, curStat, err := openRoot()
	if err != nil {
		return nil, err
	}
	defer func() { unix.Close(cur) }()
	at, todo, links := "/", path, 0
	for {
		todo = strings.TrimLeft(todo, "/")
		if todo == "" {
			break
		}
		name, rest, _ := strings.Cut(todo, "/")
		todo = rest
		if name == "." {
			continue
		}
		fd, err := eintr.Openat(cur, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", path, &os.PathError{Op: "open", Path: join(at, name), Err: err})
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("open %s: %w", path, &os.PathError{Op: "stat", Path: join(at, name), Err: err})
		}
		if err := safeStep(path, at, &curStat, join(at, name), &st); err != nil {
			unix.Close(fd)
			return nil, err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			links++
			target, err := readlink(fd)
			unix.Close(fd)
			if err == nil && links > maxSymlinks {
				err = unix.ELOOP
			}
			if err != nil {
				return nil, fmt.Errorf("open %s: %w", path, &os.PathError{Op: "readlink", Path: join(at, name), Err: err})
			}
			if strings.HasPrefix(target, "/") {
				root, rootStat, err := openRoot()
				if err == nil {
					err = safeStep(path, join(at, name), &st, "/", &rootStat)
				}
				if err != nil {
					unix.Close(root)
					return nil, err
				}
				unix.Close(cur)
				cur, curStat, at = root, rootStat, "/"
			}
			todo = target + "/" + todo
			continue
		}
		unix.Close(cur)
		cur, curStat, at = fd, st, join(at, name)
	}
	if curStat.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s: refused: not a regular file (%s)", path, fileType(curStat.Mode))
	}
	// Reopened through /proc: the same inode the walk ended at, now for
	// reading. O_NONBLOCK in case it was swapped for a FIFO meanwhile
	// (it cannot be: an O_PATH descriptor stays on its inode; but a
	// blocked supervisor is too dear a price for trusting that).
	fd, err := eintr.Openat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(cur), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: refused: not a regular file", path)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// safeStep refuses the step of the walk of path from one file to the next,
// if the first is not root's and the second is another user's: the first
// one's owner could have put the second there by a link (systemd's
// CHASE_SAFE rule).
func safeStep(path, from string, fromStat *unix.Stat_t, to string, toStat *unix.Stat_t) error {
	if fromStat.Uid == 0 || fromStat.Uid == toStat.Uid {
		return nil
	}
	return fmt.Errorf("%s: refused: its path passes from %s (owned by uid %d) to %s (owned by uid %d), which the first one's owner could have linked there; a PID file is read only along a path that never passes from a user's file to another user's (as systemd's PIDFile=)",
		path, from, fromStat.Uid, to, toStat.Uid)
}

func openRoot() (int, unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Fstat(fd, &st)
	}
	if err != nil {
		return -1, st, fmt.Errorf("open /: %w", err)
	}
	return fd, st, nil
}

func join(dir, name string) string {
	if strings.HasSuffix(dir, "/") {
		return dir + name
	}
	return dir + "/" + name
}

// readlink reads the target of the symlink fd (an O_PATH descriptor).
func readlink(fd int) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", err
	}
	if n == len(buf) {
		return "", unix.ENAMETOOLONG
	}
	return string(buf[:n]), nil
}

// fileType names the type of a file mode, for a refusal.
func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "of an unknown type"
}
