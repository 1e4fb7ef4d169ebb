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
func readFile(path string) ([]byte, error) {
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
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}
