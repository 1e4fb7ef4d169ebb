package interlock_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// keep starts a Keeper for l, stopped when the test ends.
func keep(t *testing.T, l *interlock.Lock, opts interlock.KeepOptions) *interlock.Keeper {
	t.Helper()
	k, err := l.Keep(opts)
	if err != nil {
		t.Fatalf("Keep: %v", err)
	}
	t.Cleanup(k.Stop)
	return k
}

// TestKeeperFindsLoss: a Go program that holds a directory with a Keeper
// learns of a deleted pidfile, a renamed directory or a lost lock within its
// recheck interval (plus scheduling slack: one more interval), each damage
// done keeperRounds times.
func TestKeeperFindsLoss(t *testing.T) {
	const interval, keeperRounds = 200 * time.Millisecond, 10
	damages := map[string]func(t *testing.T, dir string){
		"pidfile deleted": func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, pidfile.DefaultName)); err != nil {
				t.Fatal(err)
			}
		},
		"directory renamed": func(t *testing.T, dir string) {
			if err := os.Rename(dir, dir+".moved"); err != nil {
				t.Fatal(err)
			}
		},
		// A POSIX lock belongs to the process, and goes as soon as
		// the process closes any descriptor of the file.
		"lock lost": func(t *testing.T, dir string) {
			f, err := os.Open(filepath.Join(dir, pidfile.DefaultName))
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		},
	}
	for name, damage := range damages {
		t.Run(name, func(t *testing.T) {
			var worst time.Duration
			for i := range keeperRounds {
				dir := filepath.Join(t.TempDir(), "data"+strconv.Itoa(i))
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				l := acquire(t, dir, interlock.Options{Recheck: interval, LockMethod: pidfile.POSIX})
				k := keep(t, l, interlock.KeepOptions{})
				start := time.Now()
				damage(t, dir)
				select {
				case err := <-k.Lost():
					took := time.Since(start)
					worst = max(worst, took)
					if !errors.Is(err, interlock.ErrLost) || errors.Is(err, interlock.ErrStalled) {
						t.Fatalf("round %d: Lost delivered %v; want ErrLost", i, err)
					}
					if took > 2*interval {
						t.Errorf("round %d: loss reported %v after the damage; want within the %v interval", i, took, interval)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("round %d: no loss reported within 10s", i)
				}
				l.Release()
			}
			t.Logf("%d rounds, slowest report %v (interval %v)", keeperRounds, worst, interval)
		})
	}
}

// TestKeeperCoalescesUpdates: updates made while the storage is busy are
// written together, in one write, with the latest value of each field.
func TestKeeperCoalescesUpdates(t *testing.T) {
	dir := testutil.DataDir(t)
	l := acquire(t, dir, interlock.Options{})
	var writes atomic.Int32
	blocked, unblock := make(chan struct{}), make(chan struct{})
	k := keep(t, l, interlock.WithKeepHook(interlock.KeepOptions{}, func(op string) {
		if op == "update" && writes.Add(1) == 1 {
			close(blocked)
			<-unblock
		}
	}))
	k.SetExtra("gone", "soon")
	<-blocked
	for i := range 100 {
		k.SetExtra("n", strconv.Itoa(i))
		k.SetStatus(pidfile.Starting)
	}
	k.SetStatus(pidfile.Ready)
	k.SetExtra("gone", "")
	close(unblock)
	testutil.Eventually(t, 10*time.Second, "status ready, n=99 and no gone in the record", func() bool {
		r := readRecord(t, dir)
		_, gone := r.Extra["gone"]
		return r.Status == pidfile.Ready && r.Extra["n"] == "99" && !gone
	})
	if n := writes.Load(); n != 2 {
		t.Errorf("%d writes for 1 update and 202 made while it was under way; want 2", n)
	}
}

// TestKeeperStall: a storage operation that runs longer than StallAfter is
// reported once as ErrStalled, and a later one that does too is reported
// again.
func TestKeeperStall(t *testing.T) {
	const stall = 300 * time.Millisecond
	dir := testutil.DataDir(t)
	l := acquire(t, dir, interlock.Options{Recheck: 50 * time.Millisecond})
	var mu sync.Mutex
	var gate chan struct{} // the rechecks wait on it while it is set
	block := func() chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		gate = make(chan struct{})
		return gate
	}
	k := keep(t, l, interlock.WithKeepHook(interlock.KeepOptions{StallAfter: stall}, func(op string) {
		mu.Lock()
		g := gate
		mu.Unlock()
		if g != nil && op == "recheck" {
			<-g
		}
	}))
	for round := range 2 {
		g := block()
		start := time.Now()
		select {
		case err := <-k.Lost():
			var se *interlock.StallError
			if !errors.Is(err, interlock.ErrStalled) || errors.Is(err, interlock.ErrLost) || !errors.As(err, &se) || se.Limit != stall {
				t.Fatalf("round %d: Lost delivered %v; want a stall of %v", round, err, stall)
			}
			if took := time.Since(start); took < stall {
				t.Errorf("round %d: stall reported after %v, before the %v limit", round, took, stall)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: no stall reported within 10s", round)
		}
		select {
		case err := <-k.Lost():
			t.Fatalf("round %d: a second report of one stall: %v", round, err)
		case <-time.After(3 * stall):
		}
		before := readRecord(t, dir).Extra["heartbeat"]
		mu.Lock()
		gate = nil
		mu.Unlock()
		close(g)
		testutil.Eventually(t, 10*time.Second, "a heartbeat once the storage answers again", func() bool {
			return readRecord(t, dir).Extra["heartbeat"] != before
		})
	}
}

// TestKeeperRenewsSegment: a segment removed under a Keeper (ipcrm,
// RemoveIPC) is replaced, and is no loss.
func TestKeeperRenewsSegment(t *testing.T) {
	dir := testutil.DataDir(t)
	l := acquire(t, dir, interlock.Options{Recheck: 50 * time.Millisecond})
	old := l.Record().ShmID
	k := keep(t, l, interlock.KeepOptions{})
	if _, err := unix.SysvShmCtl(old, unix.IPC_RMID, nil); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "a new segment in the record", func() bool {
		return readRecord(t, dir).ShmID != old
	})
	if err := l.Check(); err != nil {
		t.Errorf("Check after the renewal: %v", err)
	}
	select {
	case err := <-k.Lost():
		t.Errorf("a renewed segment reported as lost: %v", err)
	default:
	}
}

// TestKeeperStop: Stop, or Release, ends the Keeper's goroutines; no storage
// operation follows, and a released Lock cannot be kept.
func TestKeeperStop(t *testing.T) {
	for _, how := range []string{"Stop", "Release"} {
		t.Run(how, func(t *testing.T) {
			dir := testutil.DataDir(t)
			l := acquire(t, dir, interlock.Options{Recheck: 10 * time.Millisecond})
			var ops atomic.Int32
			k := keep(t, l, interlock.WithKeepHook(interlock.KeepOptions{}, func(string) { ops.Add(1) }))
			if _, err := l.Keep(interlock.KeepOptions{}); err == nil {
				t.Error("a second Keep of a kept Lock succeeded")
			}
			testutil.Eventually(t, 10*time.Second, "3 rechecks", func() bool { return ops.Load() >= 3 })
			if how == "Stop" {
				k.Stop()
			} else if err := l.Release(); err != nil {
				t.Fatal(err)
			}
			// Stop waited for them; they may still be returning.
			testutil.Eventually(t, 2*time.Second, "no Keeper goroutine left after "+how, func() bool { return keeperGoroutines() == 0 })
			n := ops.Load()
			time.Sleep(50 * time.Millisecond)
			if m := ops.Load(); m != n {
				t.Errorf("%d storage operations after %s", m-n, how)
			}
			select {
			case err := <-k.Lost():
				t.Errorf("%s reported a loss: %v", how, err)
			default:
			}
			k.Stop() // idempotent
			if how == "Stop" {
				// A stopped Keeper frees the Lock for another.
				keep(t, l, interlock.KeepOptions{})
				l.Release()
			}
			if _, err := l.Keep(interlock.KeepOptions{}); err == nil {
				t.Error("Keep of a released Lock succeeded")
			}
		})
	}
}

// keeperGoroutines counts the goroutines running a Keeper's code.
func keeperGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "interlock.(*Keeper).") {
			n++
		}
	}
	return n
}
