package proc

import (
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
)

// readFile reads a small file of /proc with plain system calls. os.ReadFile
// would first try to register the descriptor with the runtime's poller (an
// epoll_ctl that procfs refuses, and four fcntl calls around it), which
// multiplies the cost of the reads a start makes on its critical path.
func readFile(path string) ([]byte, error) { return read(path, false) }

// readShown reads a /proc file that the kernel renders whole at the first
// read, a seq_file of one record (/proc/PID/stat, fdinfo): a read that
// comes back shorter than the buffer has it all, and the read that would
// return 0 is skipped. Not for files served in pieces, as environ is a page
// at a time.
func readShown(path string) ([]byte, error) { return read(path, true) }

func read(path string, shown bool) ([]byte, error) {
	fd, err := eintr.Openat(unix.AT_FDCWD, path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf))
		}
		n, err := eintr.Result(func() (int, error) { return unix.Read(fd, buf[len(buf):cap(buf)]) })
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
		if shown && len(buf) < cap(buf) {
			return buf, nil
		}
	}
}
