package interlock_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/fault"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// fast makes orphan verdicts quick: the tests know no starter is racing.
var fast = interlock.WithSettle(interlock.Options{}, 100*time.Millisecond)

func acquire(t *testing.T, dir string, opts interlock.Options) *interlock.Lock {
	t.Helper()
	l, err := interlock.Acquire(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("Acquire(%s): %v", dir, err)
	}
	t.Cleanup(func() { l.Release() })
	return l
}

func readRecord(t *testing.T, dir string) *pidfile.Record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, pidfile.DefaultName))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pidfile.Parse(b)
	if err != nil {
		t.Fatalf("pidfile content %q: %v", b, err)
	}
	return r
}

// holdWithInheritor makes a helper process hold dir and fork a child that
// shares its locked descriptor. It returns the helper, the holder's PID as
// the helper printed it, and the child, killed when the test ends.
func holdWithInheritor(t *testing.T, dir string) (h *testutil.Proc, holder string, child int) {
	t.Helper()
	h = testutil.StartHelper(t, "hold", dir)
	holder = strings.Fields(h.Expect(t, "held"))[0]
	h.Send(t, "spawn-fd")
	child, _ = strconv.Atoi(h.Expect(t, "child"))
	killLater(t, child)
	return h, holder, child
}

// releasedWithInheritor is holdWithInheritor, then a clean release by the
// holder, which exits: the child keeps the lock. It returns the child.
func releasedWithInheritor(t *testing.T, dir string) int {
	t.Helper()
	h, _, child := holdWithInheritor(t, dir)
	h.Send(t, "release")
	h.Expect(t, "released")
	h.Wait()
	return child
}

// killLater kills a process the test's helpers started, when the test ends.
func killLater(t *testing.T, pid int) {
	t.Cleanup(func() { killWait(t, pid) })
}

// killWait SIGKILLs pid (started by one of our helpers) and waits until it is
// dead: gone, or a zombie waiting for init whose threads have all exited (a
// multi-threaded process's leader turns zombie before the last thread has
// released the address space and the descriptors).
func killWait(t *testing.T, pid int) {
	syscall.Kill(pid, syscall.SIGKILL)
	for range 500 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 && b[i+2] == 'Z' && len(tasks) <= 1 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("process %d did not die", pid)
}

func TestAcquireRelease(t *testing.T) {
	dir := testutil.DataDir(t)
	l := acquire(t, dir, interlock.Options{})
	if l.Previous() != nil {
		t.Errorf("Previous() on a new data directory = %v, want nil", l.Previous())
	}
	r := readRecord(t, dir)
	me := os.Getpid()
	start, _ := proc.StartTime(me)
	boot, _ := proc.BootID()
	ns, _ := proc.Namespace(me, "pid")
	host, _ := os.Hostname()
	if r.PID != me || r.DataDir != dir || r.PIDStart != start || r.BootID != boot || r.PIDNS != ns ||
		r.Hostname != host || r.Status != pidfile.Starting || r.LockMethod != pidfile.Flock || r.Version != 1 {
		t.Errorf("record = %+v", r)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(r.Token) {
		t.Errorf("token %q is not 32 hex digits", r.Token)
	}
	if time.Since(r.StartTime) > time.Minute || time.Since(r.StartTime) < 0 {
		t.Errorf("start_time %v is not now", r.StartTime)
	}
	fi, err := os.Stat(filepath.Join(dir, pidfile.DefaultName))
	if err != nil || fi.Mode().Perm() != 0o600 || !fi.Mode().IsRegular() {
		t.Errorf("pidfile mode %v, err %v; want regular 0600", fi.Mode(), err)
	}
	var d unix.SysvShmDesc
	_, err = unix.SysvShmCtl(r.ShmID, unix.IPC_STAT, &d)
	if err != nil {
		t.Fatalf("segment %d of the record: %v", r.ShmID, err)
	}
	if int(d.Perm.Key) != r.ShmKey || d.Nattch != 1 || d.Perm.Mode&0o777 != 0o600 || d.Segsz != shm.Size {
		t.Errorf("segment key %#x nattch %d mode %o size %d; record key %#x", d.Perm.Key, d.Nattch, d.Perm.Mode, d.Segsz, r.ShmKey)
	}
	h := l.Segment().Header()
	id, _ := shm.DirIdentity(dir)
	if h.Magic != shm.Magic || h.Dir != id || h.CreatorPID != me || h.CreatorStart != start ||
		fmt.Sprintf("%x", h.Token) != r.Token {
		t.Errorf("segment header %+v does not match record %+v", h, r)
	}

	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Errorf("second Release: %v", err)
	}
	after := readRecord(t, dir)
	if after.Status != pidfile.Stopped || after.Token != r.Token || after.PID != me {
		t.Errorf("after Release record = %+v, want the same record marked stopped", after)
	}
	if _, err := shm.Stat(r.ShmID); !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
		t.Errorf("segment %d after Release: %v, want it gone", r.ShmID, err)
	}
	l2 := acquire(t, dir, interlock.Options{})
	if p := l2.Previous(); p == nil || !p.Clean() || p.Record.Token != r.Token {
		t.Errorf("Previous after a clean release = %+v, want clean with token %s", p, r.Token)
	}
}

func TestSecondAcquireInSameProcessIsHeld(t *testing.T) {
	dir := testutil.DataDir(t)
	acquire(t, dir, interlock.Options{})
	before, _ := os.ReadFile(filepath.Join(dir, pidfile.DefaultName))
	_, err := interlock.Acquire(context.Background(), dir, interlock.Options{})
	var he *interlock.HeldError
	if !errors.As(err, &he) || he.PID != os.Getpid() || !slices.Contains(he.Holders, os.Getpid()) {
		t.Fatalf("second Acquire: %v, want held by our own PID %d", err, os.Getpid())
	}
	if !strings.Contains(err.Error(), "held by PID "+strconv.Itoa(os.Getpid())) {
		t.Errorf("message %q does not name the holder", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, pidfile.DefaultName))
	if !bytes.Equal(before, after) {
		t.Error("a failed Acquire changed the holder's record")
	}
}

func TestHeldByOtherProcess(t *testing.T) {
	dir := testutil.DataDir(t)
	h := testutil.StartHelper(t, "hold", dir)
	f := strings.Fields(h.Expect(t, "held"))
	start := time.Now()
	_, err := interlock.Acquire(context.Background(), dir, interlock.Options{})
	var he *interlock.HeldError
	if !errors.As(err, &he) || !errors.Is(err, interlock.ErrHeld) || strconv.Itoa(he.PID) != f[0] {
		t.Fatalf("Acquire: %v, want held by helper %s", err, f[0])
	}
	host, _ := os.Hostname()
	if he.Host != host || !slices.Equal(he.Holders, []int{h.PID()}) {
		t.Errorf("HeldError host %q holders %v, want %q [%d]", he.Host, he.Holders, host, h.PID())
	}
	// A live, recorded holder is a final answer: no settling.
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v", d)
	}

	// Waiting: the helper releases after a while, and a waiting Acquire gets in.
	go func() { time.Sleep(300 * time.Millisecond); h.Send(t, "release") }()
	l := acquire(t, dir, interlock.Options{Wait: 10 * time.Second})
	if p := l.Previous(); p == nil || !p.Clean() {
		t.Errorf("Previous after waiting for a clean release = %v", p)
	}
}

// TestRace: 64 processes race Acquire on one data directory, round after
// round; exactly one may win each round. Even rounds use a fresh directory
// (all race to create the pidfile), odd rounds the previous one (a cleanly
// released record).
func TestRace(t *testing.T) {
	const procs, rounds = 64, 200
	racers := make([]*testutil.Proc, procs)
	for i := range racers {
		racers[i] = testutil.StartHelper(t, "race")
	}
	var dir string
	losses := map[string]int{}
	for round := range rounds {
		if round%2 == 0 {
			dir = testutil.DataDir(t)
		}
		for _, r := range racers {
			r.Send(t, "go "+dir)
		}
		winners := 0
		for i, r := range racers {
			line, err := r.ReadLine(30 * time.Second)
			if err != nil {
				t.Fatalf("round %d racer %d: %v", round, i, err)
			}
			switch {
			case line == "won":
				winners++
			case strings.HasPrefix(line, "lost held"):
				losses["held"]++
			default:
				t.Errorf("round %d racer %d: %s", round, i, line)
			}
		}
		if winners != 1 {
			t.Fatalf("round %d: %d winners, want exactly 1", round, winners)
		}
		for _, r := range racers {
			r.Send(t, "release")
		}
		for _, r := range racers {
			r.Expect(t, "ok")
		}
	}
	t.Logf("%d rounds x %d processes: one winner every round; losers: %v", rounds, procs, losses)
}

// TestCrashAtEveryStep kills a holder at each step of Acquire and Release;
// the next Acquire must get in with no manual step, and no segment may leak.
func TestCrashAtEveryStep(t *testing.T) {
	const reps = 10
	for step := fault.Opened; step <= fault.ReleaseUnlocked; step++ {
		t.Run(fmt.Sprint("step", int(step)), func(t *testing.T) {
			dir := testutil.DataDir(t)
			id, _ := shm.DirIdentity(dir)
			for rep := range reps {
				c := testutil.StartHelper(t, "crash", dir, strconv.Itoa(int(step)))
				if code := c.Wait(); code != -1 {
					t.Fatalf("rep %d: crash helper exited %d, want killed", rep, code)
				}
				l, err := interlock.Acquire(context.Background(), dir, interlock.Options{})
				if err != nil {
					t.Fatalf("rep %d: Acquire after a crash at step %d: %v", rep, step, err)
				}
				p := l.Previous()
				switch {
				case step >= fault.RecordWritten && step < fault.ReleaseMarked:
					if p == nil || p.Clean() || p.Record.PID != c.PID() {
						t.Errorf("rep %d: Previous = %v, want unclean holder PID %d", rep, p, c.PID())
					}
				case step >= fault.ReleaseMarked:
					if p == nil || !p.Clean() || p.Record.PID != c.PID() {
						t.Errorf("rep %d: Previous = %v, want clean holder PID %d", rep, p, c.PID())
					}
				}
				if err := l.Release(); err != nil {
					t.Fatal(err)
				}
				if segs, err := shm.Scan(id, shm.Owners{0, uint32(os.Geteuid())}, false); err != nil || len(segs) > 0 {
					t.Fatalf("rep %d: segments of the data directory after Release: %+v, %v; want none", rep, segs, err)
				}
			}
		})
	}
}
