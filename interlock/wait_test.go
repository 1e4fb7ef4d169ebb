package interlock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

func TestWaitTimesOutAndHonoursContext(t *testing.T) {
	dir := testutil.DataDir(t)
	h := testutil.StartHelper(t, "hold", dir)
	h.Expect(t, "held")
	start := time.Now()
	_, err := interlock.Acquire(context.Background(), dir, interlock.Options{Wait: 300 * time.Millisecond})
	if !errors.Is(err, interlock.ErrHeld) || time.Since(start) < 300*time.Millisecond {
		t.Errorf("Acquire with Wait 300ms: %v after %v", err, time.Since(start))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = interlock.Acquire(ctx, dir, interlock.Options{Wait: -1})
	if !errors.Is(err, interlock.ErrHeld) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Acquire waiting forever, cancelled: %v; want held and deadline exceeded", err)
	}
	h.Send(t, "release")
	h.Expect(t, "released")
}

// waitRuns is how many times each waiting race below is repeated.
const waitRuns = 10

// waitBlocked polls /proc/locks until this process has a request blocked
// on a lock of the inode (dev, ino): a waiter sleeping in the kernel.
func waitBlocked(t *testing.T, dev, ino uint64) {
	t.Helper()
	id := fmt.Sprintf(" %d %02x:%02x:%d ", os.Getpid(), unix.Major(dev), unix.Minor(dev), ino)
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile("/proc/locks")
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(b)) {
			if strings.Contains(line, "->") && strings.Contains(line, id) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request of this process blocked on inode %d after 30s:\n%s", ino, b)
		}
		time.Sleep(time.Millisecond)
	}
}

func pidfileID(t *testing.T, dir string) (dev, ino uint64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, pidfile.DefaultName), &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev, st.Ino
}

// A waiter blocked in the kernel on a pidfile that is then replaced must
// not take over the old inode when its holder lets go: Acquire opens the
// pidfile again and holds the one the path names.
func TestWaitPidfileReplaced(t *testing.T) {
	for range waitRuns {
		dir := testutil.DataDir(t)
		h := testutil.StartHelper(t, "hold", dir)
		h.Expect(t, "held")
		dev, ino := pidfileID(t, dir)
		type result struct {
			l   *interlock.Lock
			err error
		}
		done := make(chan result, 1)
		go func() {
			l, err := interlock.Acquire(context.Background(), dir, interlock.Options{Wait: time.Minute})
			done <- result{l, err}
		}()
		waitBlocked(t, dev, ino)
		path := filepath.Join(dir, pidfile.DefaultName)
		if err := os.WriteFile(path+".new", nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
		// Its release would refuse to write a record into an inode
		// without a name: the holder dies instead, which lets go too.
		h.Kill()
		r := <-done
		if r.err != nil {
			t.Fatalf("Acquire after the pidfile was replaced: %v", r.err)
		}
		gd, gi := r.l.File().ID()
		if gd == dev && gi == ino {
			t.Fatalf("the waiter holds the replaced inode %d", ino)
		}
		if nd, ni := pidfileID(t, dir); gd != nd || gi != ni {
			t.Fatalf("the waiter holds inode %d, the path names %d", gi, ni)
		}
		if err := r.l.Check(); err != nil {
			t.Fatalf("Check after the wait: %v", err)
		}
		if err := r.l.Release(); err != nil {
			t.Fatal(err)
		}
	}
}

// A waiter whose context is cancelled while it is blocked in the kernel
// returns at once, and the lock its abandoned wait is granted later is let
// go at once: the next Acquire (no wait) gets in, and the record is the
// holder's stopped one, untouched.
func TestWaitCancelledWhileBlocked(t *testing.T) {
	for range waitRuns {
		dir := testutil.DataDir(t)
		h := testutil.StartHelper(t, "hold", dir)
		token := strings.Fields(h.Expect(t, "held"))[1]
		dev, ino := pidfileID(t, dir)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := interlock.Acquire(ctx, dir, interlock.Options{Wait: -1})
			done <- err
		}()
		waitBlocked(t, dev, ino)
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, interlock.ErrHeld) || !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled Acquire: %v, want held and context.Canceled", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("cancelled Acquire still blocked after 30s")
		}
		h.Send(t, "release")
		h.Expect(t, "released")
		deadline := time.Now().Add(30 * time.Second)
		for {
			if rec := readRecord(t, dir); rec.Token != token || rec.Status != pidfile.Stopped {
				t.Fatalf("record after the release: token %s status %s, want the holder's %s, stopped", rec.Token, rec.Status, token)
			}
			l, err := interlock.Acquire(context.Background(), dir, interlock.Options{})
			if err == nil {
				l.Release()
				break
			}
			if !errors.Is(err, interlock.ErrHeld) || time.Now().After(deadline) {
				t.Fatalf("Acquire after the holder released and the waiter gave up: %v", err)
			}
			time.Sleep(time.Millisecond)
		}
	}
}
