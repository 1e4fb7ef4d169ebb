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

// Result is Retry for a call that returns a value besides its error, such
// as a count of bytes or a PID.
func Result[T any](call func() (T, error)) (T, error) {
	for {
		v, err := call()
		if err != unix.EINTR {
			return v, err
		}
	}
}

// Openat is unix.Openat, retried on EINTR (an open of a FIFO, or on FUSE or
// NFS, can be interrupted).
func Openat(dirfd int, path string, flags int, mode uint32) (int, error) {
	return Result(func() (int, error) { return unix.Openat(dirfd, path, flags, mode) })
}
