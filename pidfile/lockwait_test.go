package pidfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/proc"
)

// lockWaitRuns is how many times each LockWait race below is repeated.
const lockWaitRuns = 100

// startLockWait runs f.LockWait(ctx, m) on a goroutine and delivers its
// result.
func startLockWait(ctx context.Context, f *File, m Method) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f.LockWait(ctx, m) }()
	return done
}

// waitFreeFor polls until this process has no more than fds descriptors
// open (an abandoned waiter has closed its own) and then checks that a
// fresh File of dir can take the lock, and releases it: nobody, an
// abandoned waiter included, kept the lock.
func waitFreeFor(t *testing.T, dir string, m Method, fds int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for openFDs(t) > fds {
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open 30s after every waiter was done or abandoned, %d before", openFDs(t), fds)
		}
		time.Sleep(time.Millisecond)
	}
	for {
		f, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = f.TryLock(m)
		f.Close()
		if err == nil {
			return
		}
		if !errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			t.Fatalf("the lock is still held 30s after every holder let go: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// A waiter blocked in the kernel gets the lock when the holder lets go,
// through a descriptor that then is the File's own.
func TestLockWaitHandsOver(t *testing.T) {
	for _, m := range []Method{Flock, OFD} {
		t.Run(m.String(), func(t *testing.T) {
			dir := t.TempDir()
			for range lockWaitRuns {
				h := kernelHold(t, dir, m)
				w, err := Open(dir, Options{})
				if err != nil {
					t.Fatal(err)
				}
				done := startLockWait(context.Background(), w, m)
				select {
				case err := <-done:
					t.Fatalf("LockWait returned %v while the lock was held", err)
				default:
				}
				h.Close()
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("LockWait still blocked 30s after the release")
				}
				if w.Method() != m {
					t.Errorf("method %v, want %v", w.Method(), m)
				}
				if err := w.CheckLock(); err != nil {
					t.Errorf("the kernel does not list the granted lock on the File's descriptor: %v", err)
				}
				if other, err := Open(dir, Options{}); err == nil {
					other.Close()
					t.Fatal("Open of a pidfile this process holds through LockWait succeeded")
				}
				w.Close()
			}
		})
	}
}

// A grant on an inode that the path no longer names (the pidfile renamed
// over, or removed) is ErrReplaced, and the old inode's lock is let go.
func TestLockWaitReplaced(t *testing.T) {
	for _, how := range []string{"renamed over", "removed"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			path := pidPath(dir)
			for range lockWaitRuns {
				h := kernelHold(t, dir, Flock)
				w, err := Open(dir, Options{})
				if err != nil {
					t.Fatal(err)
				}
				done := startLockWait(context.Background(), w, Auto)
				if how == "removed" {
					err = os.Remove(path)
				} else {
					writeFile(t, path+".new", "", 0o600)
					err = os.Rename(path+".new", path)
				}
				if err != nil {
					t.Fatal(err)
				}
				// Whether the waiter had blocked yet or not, it must
				// not hold the old inode.
				oldDev, oldIno := h.ID()
				h.Close()
				select {
				case err := <-done:
					if !errors.Is(err, ErrReplaced) {
						t.Fatalf("LockWait after the pidfile was %s: %v, want ErrReplaced", how, err)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("LockWait still blocked 30s after the release")
				}
				if w.locked {
					t.Fatal("File locked after ErrReplaced")
				}
				w.Close()
				// Nothing of this process keeps the old inode locked.
				for _, l := range locksOnID(t, oldDev, oldIno) {
					if l.PID == os.Getpid() {
						t.Fatalf("this process still holds a lock on the replaced inode: %+v", l)
					}
				}
			}
		})
	}
}

// locksOnID lists the kernel's locks on the inode (dev, ino).
func locksOnID(t *testing.T, dev, ino uint64) []proc.Lock {
	t.Helper()
	ls, err := proc.Locks(dev, ino)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// A cancelled LockWait returns at once; the abandoned goroutine, granted
// the lock afterwards, releases it and closes its descriptor at once, and
// writes nothing. Cancel and release also race each other: whichever wins,
// the lock ends up either with the File (LockWait returned nil) or with
// nobody.
func TestLockWaitCancel(t *testing.T) {
	for _, race := range []bool{false, true} {
		t.Run(fmt.Sprintf("race=%v", race), func(t *testing.T) {
			dir := t.TempDir()
			path := pidPath(dir)
			writeFile(t, path, "content\n", 0o600)
			fds := openFDs(t)
			granted := 0
			for i := range lockWaitRuns {
				h := kernelHold(t, dir, Flock)
				w, err := Open(dir, Options{})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := startLockWait(ctx, w, Flock)
				var err2 error
				switch {
				case race && i%2 == 0:
					go h.Close()
					cancel()
					err2 = <-done
				case race:
					// Spread the cancel over the waiter's way to
					// the grant.
					h.Close()
					for range i * 20 {
						runtime.Gosched()
					}
					cancel()
					err2 = <-done
				default:
					cancel()
					select {
					case err2 = <-done:
					case <-time.After(30 * time.Second):
						t.Fatal("LockWait still blocked 30s after its context was cancelled")
					}
					if !errors.Is(err2, context.Canceled) {
						t.Fatalf("cancelled LockWait: %v, want context.Canceled", err2)
					}
					h.Close()
				}
				if err2 == nil {
					granted++
					if err := w.CheckLock(); err != nil {
						t.Fatal(err)
					}
				} else if w.locked {
					t.Fatalf("File locked after LockWait failed: %v", err2)
				}
				w.Close()
				waitFreeFor(t, dir, Flock, fds)
			}
			if b, err := os.ReadFile(path); err != nil || string(b) != "content\n" {
				t.Errorf("pidfile holds %q (%v): an abandoned waiter wrote", b, err)
			}
			t.Logf("%d runs, %d granted before the cancel", lockWaitRuns, granted)
		})
	}
}

// LockWait does not block in the kernel for POSIX locks.
func TestLockWaitRefusesPOSIX(t *testing.T) {
	dir := t.TempDir()
	f, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.LockWait(context.Background(), POSIX); !errors.Is(err, ErrNoKernelWait) {
		t.Fatalf("LockWait(POSIX): %v, want ErrNoKernelWait", err)
	}
}
