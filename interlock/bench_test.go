package interlock_test

import (
	"context"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/shm"
)

func benchAcquireRelease(b *testing.B, opts interlock.Options) {
	dir := testutil.DataDir(b)
	b.ReportAllocs()
	for b.Loop() {
		l, err := interlock.Acquire(context.Background(), dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAcquireRelease is a full cycle: checks, lock, witnesses (segment
// scan, environment scan), segment, record with fsync, and the release with
// its own fsync.
func BenchmarkAcquireRelease(b *testing.B) { benchAcquireRelease(b, interlock.Options{}) }

// BenchmarkAcquireReleaseNoSync is the same cycle without the two fsyncs.
func BenchmarkAcquireReleaseNoSync(b *testing.B) {
	benchAcquireRelease(b, interlock.WithNoSync(interlock.Options{}))
}

// BenchmarkInspectFree inspects a free data directory (a stale-free record:
// lock probe, segment scan, environment scan).
func BenchmarkInspectFree(b *testing.B) {
	dir := testutil.DataDir(b)
	l, err := interlock.Acquire(context.Background(), dir, interlock.Options{})
	if err != nil {
		b.Fatal(err)
	}
	l.Release()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := interlock.Inspect(dir, interlock.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInspectHeld inspects a data directory this process holds (the
// kernel names the holder: a scan of every process's descriptors).
func BenchmarkInspectHeld(b *testing.B) {
	dir := testutil.DataDir(b)
	l, err := interlock.Acquire(context.Background(), dir, interlock.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Release()
	b.ReportAllocs()
	for b.Loop() {
		rep, err := interlock.Inspect(dir, interlock.Options{})
		if err != nil || rep.State != interlock.Held {
			b.Fatal(rep, err)
		}
	}
}

// BenchmarkBaselineFlockWrite is what the bare minimum costs: open, flock,
// write a PID, ftruncate, fsync, unlock, close. Everything dirlockd adds is
// measured against it.
func BenchmarkBaselineFlockWrite(b *testing.B) { benchBaseline(b, true) }

// BenchmarkBaselineFlockWriteNoSync is the bare minimum without the fsync,
// to set beside BenchmarkAcquireReleaseNoSync.
func BenchmarkBaselineFlockWriteNoSync(b *testing.B) { benchBaseline(b, false) }

func benchBaseline(b *testing.B, sync bool) {
	path := filepath.Join(testutil.DataDir(b), "bare.pid")
	pid := []byte("12345\n")
	b.ReportAllocs()
	for b.Loop() {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Pwrite(fd, pid, 0); err != nil {
			b.Fatal(err)
		}
		unix.Ftruncate(fd, int64(len(pid)))
		if sync {
			if err := unix.Fsync(fd); err != nil {
				b.Fatal(err)
			}
		}
		unix.Flock(fd, unix.LOCK_UN)
		unix.Close(fd)
	}
}

// BenchmarkInspectCrashed inspects a directory whose holder died without
// releasing it, nobody left: the one case that pays for the survivor search
// (a pass over every process's environment, the segment scan).
func BenchmarkInspectCrashed(b *testing.B) {
	dir := testutil.DataDir(b)
	l, err := interlock.Acquire(context.Background(), dir, interlock.Options{})
	if err != nil {
		b.Fatal(err)
	}
	// Crash it: the record stays "starting", the lock goes with the
	// close, nobody stays attached.
	l.File().Close()
	l.Segment().Detach()
	defer l.Release() // removes the segment; the record write fails harmlessly
	b.ReportAllocs()
	for b.Loop() {
		rep, err := interlock.Inspect(dir, interlock.Options{})
		if err != nil || rep.State != interlock.Stale {
			b.Fatal(rep, err)
		}
	}
}

// BenchmarkSegment is the SysV segment witness alone, as every cycle of
// BenchmarkAcquireReleaseNoSync makes and removes it: shmget
// (IPC_CREAT|IPC_EXCL), shmat (with the IPC_STAT that x/sys/unix makes to
// size the mapping), the header write, shmdt, IPC_RMID. It is the floor
// that witness sets under an acquisition.
func BenchmarkSegment(b *testing.B) {
	id, err := shm.DirIdentity(testutil.DataDir(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		seg, err := shm.Create(id, shm.Owners{0}, shm.Header{CreatorPID: 1})
		if err != nil {
			b.Fatal(err)
		}
		if err := seg.Detach(); err != nil {
			b.Fatal(err)
		}
		if err := seg.Remove(); err != nil {
			b.Fatal(err)
		}
	}
}
