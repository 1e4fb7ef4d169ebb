package torture

// Scratch filesystems for the storage faults: a fresh tmpfs per round,
// small enough to fill.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// onTmpfs runs fn on a fresh tmpfs mounted with opts, and unmounts it. It
// reports false, with a violation, when the mount fails.
func onTmpfs(e *Env, r *Result, opts string, fn func(mnt string)) bool {
	mnt, umount, err := mountTmpfs(e, opts)
	if err != nil {
		r.fail("set-up: %v", err)
		return false
	}
	defer umount()
	fn(mnt)
	return true
}

// mountTmpfs mounts a fresh tmpfs with options opts under the scratch
// directory. The returned function unmounts it (lazily, if it is busy).
func mountTmpfs(e *Env, opts string) (string, func(), error) {
	e.n++
	mnt := filepath.Join(e.Work, fmt.Sprintf("tmpfs%d", e.n))
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return "", nil, err
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return "", nil, fmt.Errorf("mount -t tmpfs -o %s %s: %w", opts, mnt, err)
	}
	return mnt, func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			e.Logf("umount %s: %v; detaching it", mnt, err)
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				e.Logf("umount -l %s: %v", mnt, err)
			}
		}
	}, nil
}

// fill writes path until the filesystem is full.
func fill(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for range 1 << 20 {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, unix.ENOSPC) {
				return nil
			}
			return err
		}
	}
	return errors.New("never full")
}
