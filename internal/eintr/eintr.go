// Package eintr retries system calls that a signal interrupted. Package os
// retries them; golang.org/x/sys/unix returns EINTR as it comes, and in a Go
// program it comes at any time: the runtime preempts goroutines with
// signals, and dirlockd forwards and handles others.
package eintr

import "golang.org/x/sys/unix"

// Retry runs call until it fails with something else than EINTR, or
// succeeds.
func Retry(call func() error) error {
	for {
		if err := call(); err != unix.EINTR {
			return err
		}
	}
}

// Openat is unix.Openat, retried on EINTR (an open of a FIFO, or on FUSE or
// NFS, can be interrupted).
func Openat(dirfd int, path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, path, flags, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
}
