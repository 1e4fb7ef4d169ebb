package testutil

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Disk is a small ext4 filesystem of its own, on a loop device over a
// sparse file in the test's temporary directory, mounted at Dir for one
// test: a disk that the test can pause. Freeze stops it as a disk that
// stops answering does, for the processes using it and no others: every
// write to it blocks, in the kernel, until Thaw, while the rest of the
// machine goes on.
type Disk struct {
	Dir string
	t   testing.TB

	mu     sync.Mutex
	frozen bool
}

// NewDisk makes and mounts a disk of size bytes (sparse: it costs what is
// written). It is unmounted when the test ends, after what the test
// started later has been cleaned up (t.Cleanup runs in reverse order), so
// a process using it must be started after NewDisk.
func NewDisk(t testing.TB, size int64) *Disk {
	t.Helper()
	tmp := t.TempDir()
	img, dir := filepath.Join(tmp, "disk.img"), filepath.Join(tmp, "mnt")
	d := &Disk{Dir: dir, t: t}
	mustRun(t, "truncate", "-s", strconv.FormatInt(size, 10), img)
	mustRun(t, "mke2fs", "-q", "-F", "-t", "ext4", "-E", "nodiscard", img)
	mustRun(t, "mkdir", dir)
	// -o loop asks the kernel for a loop device with autoclear: it goes
	// when the filesystem is unmounted.
	mustRun(t, "mount", "-o", "loop", img, dir)
	t.Cleanup(func() {
		d.Thaw()
		// A process that used the disk may still be exiting.
		var out []byte
		var err error
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if out, err = exec.Command("umount", dir).CombinedOutput(); err == nil {
				return
			}
		}
		t.Errorf("umount %s: %v: %s", dir, err, out)
	})
	return d
}

// Freeze pauses the disk (fsfreeze(8)). The test thaws it when it ends,
// before the cleanups registered earlier (the processes that use it, which
// could not otherwise be ended: a write to a frozen disk waits through
// SIGKILL).
func (d *Disk) Freeze() {
	d.t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.frozen {
		return
	}
	mustRun(d.t, "fsfreeze", "--freeze", d.Dir)
	d.frozen = true
	d.t.Cleanup(d.Thaw)
}

// Thaw resumes a frozen disk; the writes waiting on it go on.
func (d *Disk) Thaw() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.frozen {
		return
	}
	if out, err := exec.Command("fsfreeze", "--unfreeze", d.Dir).CombinedOutput(); err != nil {
		d.t.Errorf("fsfreeze --unfreeze %s: %v: %s", d.Dir, err, out)
		return
	}
	d.frozen = false
}

// mustRun runs a command the test needs, failing the test on an error.
func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}
