package interlock_test

// Tests of what a holder must never lose or destroy: a pidfile that is not
// provably ours is never written, the holder's own process cannot drop its
// lock by looking at the directory, and a segment removed under a live
// holder is renewed, not mistaken for a lost interlock.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// precious makes a file outside the data directory with content and an old
// mtime, and returns a function that fails the test if either changed.
func precious(t *testing.T) (path string, unchanged func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "precious")
	const content = "not dirlockd's: keep me\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	return path, func() {
		t.Helper()
		b, err := os.ReadFile(path)
		fi, serr := os.Stat(path)
		if err != nil || serr != nil || string(b) != content || !fi.ModTime().Equal(old) {
			t.Errorf("the file outside the data directory changed: content %q (%v), mtime %v (%v)", b, err, fi.ModTime(), serr)
		}
	}
}

// wantInvalid checks that Acquire, Inspect and pidfile.Read all refuse dir
// with an *InvalidError mentioning want, and that nobody locked the pidfile.
func wantInvalid(t *testing.T, dir, want string) {
	t.Helper()
	_, err := interlock.Acquire(context.Background(), dir, interlock.Options{})
	var ie *pidfile.InvalidError
	if !errors.Is(err, interlock.ErrInvalid) || !errors.As(err, &ie) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Acquire: %v; want invalid, mentioning %q", err, want)
	}
	t.Logf("Acquire: %v", err)
	if _, err := interlock.Inspect(dir, interlock.Options{}); !errors.Is(err, interlock.ErrInvalid) || !strings.Contains(err.Error(), want) {
		t.Errorf("Inspect: %v; want invalid, mentioning %q", err, want)
	}
	if _, err := pidfile.Read(dir, pidfile.Options{}); !errors.Is(err, pidfile.ErrInvalid) || !strings.Contains(err.Error(), want) {
		t.Errorf("pidfile.Read: %v; want invalid, mentioning %q", err, want)
	}
	if locks, err := os.ReadFile("/proc/locks"); err == nil {
		var st unix.Stat_t
		unix.Stat(filepath.Join(dir, pidfile.DefaultName), &st)
		if id := fmt.Sprintf(":%d ", st.Ino); strings.Contains(string(locks), id) {
			t.Errorf("a lock was taken on the refused pidfile (inode %d):\n%s", st.Ino, locks)
		}
	}
}

// TestHardLinkedPidfileRefused: a pidfile that is a hard link to a file
// elsewhere is refused before anything locks, reads into or writes it.
func TestHardLinkedPidfileRefused(t *testing.T) {
	dir := testutil.DataDir(t)
	other, unchanged := precious(t)
	if err := os.Link(other, filepath.Join(dir, pidfile.DefaultName)); err != nil {
		t.Fatal(err)
	}
	wantInvalid(t, dir, "has 2 links: another name elsewhere shares this inode")
	unchanged()
}

// TestBindMountedPidfileRefused: a file bind-mounted over the pidfile's
// name, from the same filesystem (so st_dev alone would not tell) and with
// one link, is refused too.
func TestBindMountedPidfileRefused(t *testing.T) {
	dir := testutil.DataDir(t)
	path := filepath.Join(dir, pidfile.DefaultName)
	other, unchanged := precious(t)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(other, path, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount %s over %s: %v", other, path, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(path, 0); err != nil {
			t.Errorf("umount %s: %v", path, err)
		}
	})
	wantInvalid(t, dir, "is a mount point")
	unchanged()
}

// TestLinkMadeWhileHeld: a hard link made to a held pidfile makes Check
// report the interlock lost and the heartbeat refuse to write; once the
// link is gone, both work again.
func TestLinkMadeWhileHeld(t *testing.T) {
	dir := testutil.DataDir(t)
	path := filepath.Join(dir, pidfile.DefaultName)
	l := acquire(t, dir, interlock.Options{})
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Link(path, link); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(link)
	if err := l.Check(); !errors.Is(err, interlock.ErrLost) || !strings.Contains(err.Error(), "2 links") {
		t.Fatalf("Check with a second link: %v, want lost naming 2 links", err)
	}
	if err := l.Heartbeat(); !errors.Is(err, interlock.ErrLost) || !strings.Contains(err.Error(), "2 links") {
		t.Fatalf("Heartbeat with a second link: %v, want refused as lost", err)
	}
	if after, _ := os.ReadFile(link); string(after) != string(before) {
		t.Errorf("the linked file was written: %q -> %q", before, after)
	}
	os.Remove(link)
	if err := l.Check(); err != nil {
		t.Fatalf("Check once the link is gone: %v", err)
	}
	if err := l.Heartbeat(); err != nil {
		t.Fatalf("Heartbeat once the link is gone: %v", err)
	}
}

// inspectFromChild runs Inspect of dir in a helper process and returns its
// "STATE PID".
func inspectFromChild(t *testing.T, dir string) string {
	t.Helper()
	h := testutil.StartHelper(t, "inspect", dir)
	line, err := h.ReadLine(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h.Wait()
	return line
}

// TestSameProcessNeverDropsItsLock: for every lock method, a second Acquire
// and an Inspect of a directory this process holds answer at once without
// opening the pidfile, and the lock stays held: Check passes, and another
// process still sees this one holding.
func TestSameProcessNeverDropsItsLock(t *testing.T) {
	me := os.Getpid()
	for _, m := range []pidfile.Method{pidfile.Flock, pidfile.OFD, pidfile.POSIX} {
		t.Run(m.String(), func(t *testing.T) {
			dir := testutil.DataDir(t)
			opts := interlock.Options{LockMethod: m}
			l := acquire(t, dir, opts)
			if l.File().Method() != m {
				t.Fatalf("locked with %v, want %v", l.File().Method(), m)
			}
			fds := openFDs(t)

			start := time.Now()
			again := opts
			again.Wait = 10 * time.Second
			l2, err := interlock.Acquire(context.Background(), dir, again)
			var he *interlock.HeldError
			if !errors.Is(err, interlock.ErrHeld) || !errors.As(err, &he) || he.PID != me || !slices.Equal(he.Holders, []int{me}) {
				if l2 != nil {
					l2.Release()
				}
				t.Fatalf("second Acquire: %v, want held by this process (PID %d)", err, me)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("second Acquire took %v with Wait 10s, want a refusal at once", d)
			}
			if !strings.Contains(err.Error(), "held by PID "+strconv.Itoa(me)) || !strings.Contains(err.Error(), "this very process") {
				t.Errorf("message %q does not say this process holds it", err)
			}
			if he.Record == nil || he.Record.Token != l.Record().Token {
				t.Errorf("HeldError record %+v, want ours", he.Record)
			}

			rep, err := interlock.Inspect(dir, opts)
			if err != nil || rep.State != interlock.Held || rep.Record == nil || rep.Record.Token != l.Record().Token ||
				!slices.Contains(rep.Holders, me) || !errors.As(rep.Err, &he) || he.PID != me {
				t.Fatalf("Inspect: %+v, %v; want held by this process with our record", rep, err)
			}
			if r, err := pidfile.Read(dir, pidfile.Options{}); err != nil || r.Outcome != pidfile.Held {
				t.Fatalf("pidfile.Read: %+v, %v; want held", r, err)
			}
			if f, err := pidfile.Open(dir, pidfile.Options{Method: m}); !errors.As(err, new(*pidfile.LockedHereError)) {
				if f != nil {
					f.Close()
				}
				t.Fatalf("pidfile.Open: %v; want a *LockedHereError", err)
			}
			if after := openFDs(t); after != fds {
				t.Errorf("%d descriptors open after Acquire, Inspect, Read and Open; %d before", after, fds)
			}
			if err := l.Check(); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if got, want := inspectFromChild(t, dir), fmt.Sprintf("held %d", me); got != want {
				t.Fatalf("another process's Inspect: %q, want %q", got, want)
			}
			if err := l.Release(); err != nil {
				t.Fatal(err)
			}
			// Released: the registry forgot it, and the directory is free
			// to this process too.
			l3 := acquire(t, dir, opts)
			if p := l3.Previous(); p == nil || !p.Clean() {
				t.Errorf("Previous after Release in the same process: %v", p)
			}
		})
	}
}

// TestCheckNoticesKernelLockGone: Check asks the kernel, so a lock dropped
// behind the holder's back is lost. For POSIX this is the real failure: any
// close of another descriptor of the pidfile in the process, here one opened
// with a raw open(2) that no registry sees.
func TestCheckNoticesKernelLockGone(t *testing.T) {
	drop := map[pidfile.Method]func(t *testing.T, path string, l *interlock.Lock){
		pidfile.POSIX: func(t *testing.T, path string, _ *interlock.Lock) {
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
		},
		pidfile.Flock: func(t *testing.T, _ string, l *interlock.Lock) {
			if err := unix.Flock(int(l.File().OS().Fd()), unix.LOCK_UN); err != nil {
				t.Fatal(err)
			}
		},
		pidfile.OFD: func(t *testing.T, _ string, l *interlock.Lock) {
			lk := unix.Flock_t{Type: unix.F_UNLCK}
			if err := unix.FcntlFlock(l.File().OS().Fd(), unix.F_OFD_SETLK, &lk); err != nil {
				t.Fatal(err)
			}
		},
	}
	for _, m := range []pidfile.Method{pidfile.Flock, pidfile.OFD, pidfile.POSIX} {
		t.Run(m.String(), func(t *testing.T) {
			dir := testutil.DataDir(t)
			l := acquire(t, dir, interlock.Options{LockMethod: m})
			if err := l.Check(); err != nil {
				t.Fatalf("Check of an intact holder: %v", err)
			}
			drop[m](t, filepath.Join(dir, pidfile.DefaultName), l)
			err := l.Check()
			if !errors.Is(err, interlock.ErrLost) || !strings.Contains(err.Error(), "kernel no longer") {
				t.Fatalf("Check after the lock was dropped: %v, want lost, saying the kernel no longer holds it", err)
			}
			t.Logf("%v", err)
			// The kernel agrees: another process finds the lock free, and
			// only the segment this process is still attached to says
			// anybody is left.
			if got, want := inspectFromChild(t, dir), fmt.Sprintf("orphans %d", os.Getpid()); got != want {
				t.Errorf("another process's Inspect: %q, want %q", got, want)
			}
		})
	}
}

// TestSegmentLostThenRenewed: a segment removed (ipcrm, RemoveIPC) or
// overwritten under a live holder is ErrSegmentLost, not ErrLost; after
// RenewSegment the holder has a new segment with its token, recorded in the
// pidfile, and Check passes. Release then leaves no segment (TestMain checks
// for leaks).
func TestSegmentLostThenRenewed(t *testing.T) {
	damage := map[string]func(t *testing.T, id int){
		"removed": func(t *testing.T, id int) {
			if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil {
				t.Fatal(err)
			}
		},
		"overwritten": func(t *testing.T, id int) {
			mem, err := unix.SysvShmAttach(id, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			clear(mem[:128])
			unix.SysvShmDetach(mem)
		},
	}
	for name, hurt := range damage {
		t.Run(name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			l := acquire(t, dir, interlock.Options{})
			old := l.Record()
			hurt(t, old.ShmID)
			err := l.Check()
			var se *interlock.SegmentLostError
			if !errors.Is(err, interlock.ErrSegmentLost) || errors.Is(err, interlock.ErrLost) || !errors.As(err, &se) || se.ID != old.ShmID {
				t.Fatalf("Check: %v; want ErrSegmentLost for segment %d, not ErrLost", err, old.ShmID)
			}
			if name == "removed" && !strings.Contains(err.Error(), "RemoveIPC=no") {
				t.Errorf("message %q does not name RemoveIPC", err)
			}
			t.Logf("%v", err)

			if err := l.RenewSegment(); err != nil {
				t.Fatalf("RenewSegment: %v", err)
			}
			if err := l.Check(); err != nil {
				t.Fatalf("Check after RenewSegment: %v", err)
			}
			now := l.Record()
			disk := readRecord(t, dir)
			if now.ShmID == old.ShmID || disk.ShmID != now.ShmID || disk.ShmKey != now.ShmKey || disk.Token != old.Token {
				t.Fatalf("record after RenewSegment: memory %+v, disk %+v; want a new segment and the old token %s", now, disk, old.Token)
			}
			d, err := shm.Stat(now.ShmID)
			if err != nil || d.Key != now.ShmKey || d.Removed || d.Nattch != 1 {
				t.Fatalf("new segment %d: %+v, %v; want live, key %#x, attached once", now.ShmID, d, err, now.ShmKey)
			}
			id, _ := shm.DirIdentity(dir)
			if h := l.Segment().Header(); h.Magic != shm.Magic || h.Dir != id || fmt.Sprintf("%x", h.Token) != old.Token {
				t.Fatalf("new segment's header: %+v; want ours with token %s", h, old.Token)
			}
			if _, err := shm.Stat(old.ShmID); err == nil {
				t.Errorf("old segment %d still exists", old.ShmID)
			}
			if err := l.Release(); err != nil {
				t.Fatal(err)
			}
			if _, err := shm.Stat(now.ShmID); err == nil {
				t.Errorf("new segment %d survives Release", now.ShmID)
			}
		})
	}
}
