package interlock_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
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

func TestUpdateKeepsExtraKeys(t *testing.T) {
	dir := testutil.DataDir(t)
	l := acquire(t, dir, interlock.Options{})
	if err := l.Update(func(r *pidfile.Record) {
		r.Status = pidfile.Ready
		r.Extra = map[string]string{"child_pid": "42"}
	}); err != nil {
		t.Fatal(err)
	}
	r := readRecord(t, dir)
	if r.Status != pidfile.Ready || r.Extra["child_pid"] != "42" {
		t.Errorf("record after Update = %+v", r)
	}
	l.Release()
	if r := readRecord(t, dir); r.Status != pidfile.Stopped || r.Extra["child_pid"] != "42" {
		t.Errorf("record after Release = %+v, want stopped with child_pid kept", r)
	}
	if err := l.Update(func(*pidfile.Record) {}); err == nil {
		t.Error("Update after Release succeeded")
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
	for step := interlock.StepOpened; step <= interlock.StepReleaseUnlocked; step++ {
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
				case step >= interlock.StepRecordWritten && step < interlock.StepReleaseMarked:
					if p == nil || p.Clean() || p.Record.PID != c.PID() {
						t.Errorf("rep %d: Previous = %v, want unclean holder PID %d", rep, p, c.PID())
					}
				case step >= interlock.StepReleaseMarked:
					if p == nil || !p.Clean() || p.Record.PID != c.PID() {
						t.Errorf("rep %d: Previous = %v, want clean holder PID %d", rep, p, c.PID())
					}
				}
				if err := l.Release(); err != nil {
					t.Fatal(err)
				}
				if segs, err := shm.Scan(id, false); err != nil || len(segs) > 0 {
					t.Fatalf("rep %d: segments of the data directory after Release: %+v, %v; want none", rep, segs, err)
				}
			}
		})
	}
}

// writeStale writes a record naming pid (with its real start time when it is
// alive) as a holder that never released, and leaves the lock free.
func writeStale(t *testing.T, dir string, pid int) *pidfile.Record {
	t.Helper()
	f, err := pidfile.Open(dir, pidfile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.TryLock(pidfile.Auto); err != nil {
		t.Fatal(err)
	}
	start, _ := proc.StartTime(pid)
	boot, _ := proc.BootID()
	ns, _ := proc.Namespace(os.Getpid(), "pid")
	host, _ := os.Hostname()
	r := &pidfile.Record{PID: pid, DataDir: dir, StartTime: time.Now().Add(-time.Hour), BootID: boot,
		Hostname: host, PIDNS: ns, PIDStart: start, ShmKey: 0, ShmID: -1, LockMethod: pidfile.Flock,
		Status: pidfile.Ready, Token: fmt.Sprintf("%032x", pid), Version: 1}
	if err := f.Write(r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestStaleRecordNamingLivePIDs: a record may name a live process that is not
// a holder (the PID was reused, or it names us, our parent or init). Only the
// lock and the other witnesses count.
func TestStaleRecordNamingLivePIDs(t *testing.T) {
	for _, c := range []struct {
		name string
		pid  int
	}{{"init", 1}, {"parent", os.Getppid()}, {"self", os.Getpid()}} {
		t.Run(c.name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			writeStale(t, dir, c.pid)
			rep, err := interlock.Inspect(dir, interlock.Options{})
			if err != nil || rep.State != interlock.Stale {
				t.Fatalf("Inspect: %+v, %v; want stale", rep, err)
			}
			want := fmt.Sprintf("previous holder PID %d", c.pid)
			if !strings.Contains(rep.Message(), want) || !strings.Contains(rep.Message(), "did not shut down cleanly") {
				t.Errorf("Inspect message %q, want %q ... did not shut down cleanly", rep.Message(), want)
			}
			l := acquire(t, dir, interlock.Options{})
			if p := l.Previous(); p == nil || p.Clean() || p.Record.PID != c.pid || !strings.Contains(p.String(), want) {
				t.Errorf("Previous = %v", p)
			}
		})
	}
}

func TestOrphanHoldingInheritedLock(t *testing.T) {
	dir := testutil.DataDir(t)
	h, holder, child := holdWithInheritor(t, dir)
	h.Kill()

	_, err := interlock.Acquire(context.Background(), dir, fast)
	var oe *interlock.OrphansError
	if !errors.As(err, &oe) || !slices.Equal(oe.PIDs(), []int{child}) || oe.Orphans[0].Witness != interlock.WitnessLock {
		t.Fatalf("Acquire: %v, want orphans [%d] holding the lock", err, child)
	}
	if strconv.Itoa(oe.Previous.PID) != holder || !strings.Contains(err.Error(), "sleep 300") ||
		!strings.Contains(err.Error(), fmt.Sprintf("kill %d", child)) {
		t.Errorf("message %q should name the old holder %s, the orphan's command line and what to do", err, holder)
	}
	rep, err := interlock.Inspect(dir, fast)
	if err != nil || rep.State != interlock.Orphaned {
		t.Errorf("Inspect: %+v, %v; want orphans", rep, err)
	}

	killWait(t, child)
	l := acquire(t, dir, interlock.Options{})
	if p := l.Previous(); p == nil || p.Clean() || strconv.Itoa(p.Record.PID) != holder {
		t.Errorf("Previous = %v, want unclean holder %s", p, holder)
	}
}

func TestOrphanAttachedToSegment(t *testing.T) {
	for _, damage := range []string{"none", "pidfile deleted", "pidfile emptied", "pidfile garbage"} {
		t.Run(damage, func(t *testing.T) {
			dir := testutil.DataDir(t)
			h := testutil.StartHelper(t, "hold", dir)
			shmid, _ := strconv.Atoi(strings.Fields(h.Expect(t, "held"))[2])
			h.Send(t, "spawn-attach")
			child, _ := strconv.Atoi(h.Expect(t, "child"))
			killLater(t, child)
			h.Kill()
			path := filepath.Join(dir, pidfile.DefaultName)
			switch damage {
			case "pidfile deleted":
				os.Remove(path)
			case "pidfile emptied":
				os.Truncate(path, 0)
			case "pidfile garbage":
				os.WriteFile(path, []byte("hello\x00world\n"), 0o600)
			}
			before, _ := os.ReadFile(path)

			_, err := interlock.Acquire(context.Background(), dir, fast)
			var oe *interlock.OrphansError
			if !errors.As(err, &oe) || !slices.Equal(oe.PIDs(), []int{child}) || oe.Orphans[0].Witness != interlock.WitnessSegment {
				t.Fatalf("Acquire: %v, want orphans [%d] attached to the segment", err, child)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Errorf("refused Acquire changed the pidfile from %q to %q", before, after)
			}
			if d, err := shm.Stat(shmid); err != nil || d.Nattch != 1 {
				t.Errorf("old segment %d after refusal: %v, %v; want it untouched", shmid, d, err)
			}
			if rep, err := interlock.Inspect(dir, fast); err != nil || rep.State != interlock.Orphaned {
				t.Errorf("Inspect: %+v, %v; want orphans", rep, err)
			}

			killWait(t, child)
			acquire(t, dir, interlock.Options{})
			if _, err := shm.Stat(shmid); err == nil {
				t.Errorf("old segment %d still exists after the takeover", shmid)
			}
		})
	}
}

func TestOrphanCarryingToken(t *testing.T) {
	dir := testutil.DataDir(t)
	h := testutil.StartHelper(t, "hold", dir)
	h.Expect(t, "held")
	h.Send(t, "spawn-token")
	child, _ := strconv.Atoi(h.Expect(t, "child"))
	killLater(t, child)
	h.Kill()

	_, err := interlock.Acquire(context.Background(), dir, fast)
	var oe *interlock.OrphansError
	if !errors.As(err, &oe) || !slices.Equal(oe.PIDs(), []int{child}) || oe.Orphans[0].Witness != interlock.WitnessToken {
		t.Fatalf("Acquire: %v, want orphans [%d] carrying the token", err, child)
	}
	killWait(t, child)
	acquire(t, dir, interlock.Options{})
}

// TestForeignSegmentAtKeyUntouched plants segments at the data directory's
// key: one with another program's bytes, one owned by another user with a
// read-only mode. Neither may be used, changed or removed.
func TestForeignSegmentAtKeyUntouched(t *testing.T) {
	for _, owner := range []string{"same owner", "other owner"} {
		t.Run(owner, func(t *testing.T) {
			dir := testutil.DataDir(t)
			id, _ := shm.DirIdentity(dir)
			key := shm.BaseKey(id)
			fid, err := unix.SysvShmGet(key, shm.Size, unix.IPC_CREAT|unix.IPC_EXCL|0o600)
			if err != nil {
				t.Fatalf("plant segment at %#x: %v", key, err)
			}
			t.Cleanup(func() { unix.SysvShmCtl(fid, unix.IPC_RMID, nil) })
			mem, err := unix.SysvShmAttach(fid, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			copy(mem, "somebody else's data")
			unix.SysvShmDetach(mem)
			if owner == "other owner" {
				var d unix.SysvShmDesc
				unix.SysvShmCtl(fid, unix.IPC_STAT, &d)
				d.Perm.Uid, d.Perm.Gid, d.Perm.Mode = 65534, 65534, 0o400
				if _, err := unix.SysvShmCtl(fid, unix.IPC_SET, &d); err != nil {
					t.Fatal(err)
				}
			}
			var before, after unix.SysvShmDesc
			unix.SysvShmCtl(fid, unix.IPC_STAT, &before)

			l := acquire(t, dir, interlock.Options{})
			if r := l.Record(); r.ShmID == fid || r.ShmKey == key {
				t.Errorf("holder took the foreign segment's key or id: %+v", r)
			}
			l.Release()
			_, err = unix.SysvShmCtl(fid, unix.IPC_STAT, &after)
			if err != nil || after.Perm != before.Perm || after.Nattch != 0 {
				t.Fatalf("foreign segment after Acquire/Release: %+v, %v; before %+v", after, err, before)
			}
			mem, err = unix.SysvShmAttach(fid, 0, unix.SHM_RDONLY)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.SysvShmDetach(mem)
			if !bytes.HasPrefix(mem, []byte("somebody else's data")) {
				t.Error("foreign segment's content changed")
			}
		})
	}
}

// TestBadPidfileContent: whatever garbage the pidfile holds, a free lock and
// no survivors mean a safe takeover, with the garbage reported.
func TestBadPidfileContent(t *testing.T) {
	valid := (&pidfile.Record{PID: 123, DataDir: "/x", StartTime: time.Unix(1, 0), ShmKey: 0, ShmID: -1,
		Status: pidfile.Ready, Token: "t", Version: 1}).Marshal()
	cases := map[string][]byte{
		"empty":            {},
		"garbage":          []byte("not a pidfile\n"),
		"binary":           {0, 1, 2, 0xff, 0xfe, '\n', 0},
		"truncated":        valid[:len(valid)/2],
		"oversized":        bytes.Repeat([]byte("1234567\n"), 128<<10),
		"zero pid":         []byte("0\n"),
		"negative pid":     []byte("-5\n"),
		"huge pid":         []byte("99999999999999999999\n"),
		"crlf":             bytes.ReplaceAll(valid, []byte("\n"), []byte("\r\n")),
		"no pid line":      valid[bytes.IndexByte(valid, '\n')+1:],
		"postgres pidfile": []byte("4242\n/var/lib/postgresql/data\n1700000000\n5432\n/tmp\n*\n  5432001      32768\nready   \n"),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			path := filepath.Join(dir, pidfile.DefaultName)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			rep, err := interlock.Inspect(dir, interlock.Options{})
			if err != nil || rep.State != interlock.Stale || !errors.Is(rep.RecordErr, pidfile.ErrMalformed) {
				t.Fatalf("Inspect: %+v, %v; want stale with a malformed record", rep, err)
			}
			l := acquire(t, dir, interlock.Options{})
			p := l.Previous()
			if p == nil || p.Record != nil || !errors.Is(p.Err, pidfile.ErrMalformed) {
				t.Fatalf("Previous = %+v, want the malformed content reported", p)
			}
			wantRaw := content
			if len(wantRaw) > pidfile.MaxSize {
				wantRaw = wantRaw[:pidfile.MaxSize+1]
			}
			if !bytes.Equal(p.Raw, wantRaw) {
				t.Errorf("Previous.Raw has %d bytes, want %d", len(p.Raw), len(wantRaw))
			}
			if r := readRecord(t, dir); r.PID != os.Getpid() {
				t.Errorf("new record names %d", r.PID)
			}
		})
	}
}

func TestInvalidDataDirectory(t *testing.T) {
	mk := func(t *testing.T, setup func(dir, path string) error) string {
		dir := testutil.DataDir(t)
		if err := setup(dir, filepath.Join(dir, pidfile.DefaultName)); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	cases := []struct {
		name  string
		setup func(dir, path string) error
		want  string
	}{
		{"missing", func(dir, _ string) error { return os.Remove(dir) }, "install -d -m 0700"},
		{"not a directory", func(dir, _ string) error {
			os.Remove(dir)
			return os.WriteFile(dir, nil, 0o600)
		}, "not a directory"},
		{"group-writable", func(dir, _ string) error { return os.Chmod(dir, 0o770) }, "chmod go-w"},
		{"other owner", func(dir, _ string) error { return os.Chown(dir, 65534, 65534) }, "owned by uid 65534"},
		{"pidfile symlink", func(dir, path string) error {
			os.WriteFile(dir+"/target", []byte("keep"), 0o600)
			return os.Symlink(dir+"/target", path)
		}, "symbolic link"},
		{"pidfile directory", func(_, path string) error { return os.Mkdir(path, 0o700) }, "is a directory"},
		{"pidfile fifo", func(_, path string) error { return unix.Mkfifo(path, 0o600) }, "not a regular file"},
		{"pidfile other owner", func(_, path string) error {
			os.WriteFile(path, nil, 0o600)
			return os.Chown(path, 65534, 65534)
		}, "owned by uid 65534"},
		{"pidfile world-writable", func(_, path string) error {
			os.WriteFile(path, nil, 0o600)
			return os.Chmod(path, 0o666)
		}, "chmod 0600"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := mk(t, c.setup)
			path := filepath.Join(dir, pidfile.DefaultName)
			before, _ := os.Lstat(path)
			_, err := interlock.Acquire(context.Background(), dir, interlock.Options{})
			var ie *pidfile.InvalidError
			if !errors.Is(err, interlock.ErrInvalid) || !errors.As(err, &ie) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Acquire: %v; want invalid, mentioning %q", err, c.want)
			}
			if _, err := interlock.Inspect(dir, interlock.Options{}); !errors.Is(err, interlock.ErrInvalid) {
				t.Errorf("Inspect: %v, want invalid", err)
			}
			after, _ := os.Lstat(path)
			if (before == nil) != (after == nil) || before != nil && (before.Mode() != after.Mode() || !os.SameFile(before, after)) {
				t.Errorf("the offending pidfile was changed: %v -> %v", before, after)
			}
			if c.name == "pidfile symlink" {
				if b, _ := os.ReadFile(dir + "/target"); string(b) != "keep" {
					t.Errorf("symlink target now holds %q", b)
				}
			}
		})
	}
}

// TestInspectDuringStorm: inspectors hammering a data directory must never
// make a starter fail.
func TestInspectDuringStorm(t *testing.T) {
	const cycles, inspectors = 300, 4
	dir := testutil.DataDir(t)
	c := testutil.StartHelper(t, "cycle", dir, strconv.Itoa(cycles))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var inspections int
	stop := make(chan struct{})
	for range inspectors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := interlock.Inspect(dir, interlock.Options{}); err != nil {
					t.Errorf("Inspect: %v", err)
					return
				}
				mu.Lock()
				inspections++
				mu.Unlock()
			}
		}()
	}
	line, err := c.ReadLine(2 * time.Minute)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, "done 0 ") {
		t.Fatalf("starter: %s; want no failure in %d cycles", line, cycles)
	}
	if inspections < 100 {
		t.Errorf("only %d inspections ran: the test proves little", inspections)
	}
	t.Logf("%d acquire/release cycles, %d concurrent inspections, 0 failed starts", cycles, inspections)
}

func TestInspectStates(t *testing.T) {
	dir := testutil.DataDir(t)
	state := func(want interlock.State) *interlock.Report {
		t.Helper()
		rep, err := interlock.Inspect(dir, fast)
		if err != nil || rep.State != want {
			t.Fatalf("Inspect: %+v, %v; want %s", rep, err, want)
		}
		return rep
	}
	if rep := state(interlock.Free); !strings.Contains(rep.Message(), "no pidfile") {
		t.Errorf("message %q", rep.Message())
	}
	if _, err := os.Stat(filepath.Join(dir, pidfile.DefaultName)); err == nil {
		t.Error("Inspect created the pidfile")
	}
	h := testutil.StartHelper(t, "hold", dir)
	h.Expect(t, "held")
	rep := state(interlock.Held)
	if !slices.Equal(rep.Holders, []int{h.PID()}) || rep.Record.PID != h.PID() {
		t.Errorf("held report: holders %v record %+v", rep.Holders, rep.Record)
	}
	h.Send(t, "release")
	h.Expect(t, "released")
	state(interlock.Free)
	h.Wait()
	h = testutil.StartHelper(t, "hold", dir)
	h.Expect(t, "held")
	h.Kill()
	if rep := state(interlock.Stale); !strings.Contains(rep.Message(), fmt.Sprintf("previous holder PID %d", h.PID())) {
		t.Errorf("stale message %q", rep.Message())
	}
	// Inspect must not have removed the dead holder's segment: it takes nothing.
	if id, _ := shm.DirIdentity(dir); true {
		segs, err := shm.Scan(id, false)
		if err != nil || len(segs) != 1 || segs[0].State != shm.Unattached {
			t.Errorf("segments after Inspect: %+v, %v; want the dead holder's, unattached", segs, err)
		}
	}
	acquire(t, dir, interlock.Options{}) // reclaims the dead holder's segment
}

func TestCheckDetectsLoss(t *testing.T) {
	cases := map[string]func(t *testing.T, dir string, l *interlock.Lock){
		"pidfile deleted": func(t *testing.T, dir string, _ *interlock.Lock) {
			os.Remove(filepath.Join(dir, pidfile.DefaultName))
		},
		"pidfile replaced": func(t *testing.T, dir string, _ *interlock.Lock) {
			p := filepath.Join(dir, pidfile.DefaultName)
			b, _ := os.ReadFile(p)
			os.WriteFile(p+".new", b, 0o600)
			os.Rename(p+".new", p)
		},
		"record rewritten": func(t *testing.T, dir string, l *interlock.Lock) {
			r := l.Record()
			r.PID, r.Token = 1, strings.Repeat("0", 32)
			os.WriteFile(filepath.Join(dir, pidfile.DefaultName), r.Marshal(), 0o600)
		},
		"pidfile deleted, segment removed too": func(t *testing.T, dir string, l *interlock.Lock) {
			os.Remove(filepath.Join(dir, pidfile.DefaultName))
			if _, err := unix.SysvShmCtl(l.Segment().ID, unix.IPC_RMID, nil); err != nil {
				t.Fatal(err)
			}
		},
		"hard link made": func(t *testing.T, dir string, _ *interlock.Lock) {
			if err := os.Link(filepath.Join(dir, pidfile.DefaultName), filepath.Join(t.TempDir(), "link")); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			l := acquire(t, dir, interlock.Options{})
			if err := l.Check(); err != nil {
				t.Fatalf("Check of an intact holder: %v", err)
			}
			damage(t, dir, l)
			err := l.Check()
			var le *interlock.LostError
			if !errors.Is(err, interlock.ErrLost) || !errors.As(err, &le) || errors.Is(err, interlock.ErrSegmentLost) {
				t.Fatalf("Check after %s: %v, want lost (and not only the segment)", name, err)
			}
			t.Logf("%s: %v", name, err)
		})
	}
}

// TestReleaseLeavesInheritedLockHeld: a child that shares the holder's locked
// descriptor keeps the lock after Release, so the next starter sees it as an
// orphan instead of walking in.
func TestReleaseLeavesInheritedLockHeld(t *testing.T) {
	dir := testutil.DataDir(t)
	child := releasedWithInheritor(t, dir)

	_, err := interlock.Acquire(context.Background(), dir, fast)
	var oe *interlock.OrphansError
	if !errors.As(err, &oe) || !slices.Equal(oe.PIDs(), []int{child}) {
		t.Fatalf("Acquire after a release with a surviving child: %v, want orphans [%d]", err, child)
	}
	killWait(t, child)
	acquire(t, dir, interlock.Options{})
}

// TestOrphanStartedForThisDirectory: a server that dirlockd run started
// carries DIRLOCKD_PIDFILE; with the record lost (here: emptied, as a crash
// between write and truncate or a careless hand could leave it) and every
// descriptor closed, that variable alone still blocks a takeover.
func TestOrphanStartedForThisDirectory(t *testing.T) {
	dir := testutil.DataDir(t)
	path := filepath.Join(dir, pidfile.DefaultName)
	l := acquire(t, dir, interlock.Options{})
	l.Release()
	cmd := exec.Command("/bin/sleep", "300")
	cmd.Env = []string{interlock.PidfileEnv + "=" + path, interlock.TokenEnv + "=" + strings.Repeat("ab", 16)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	os.Truncate(path, 0)

	_, err := interlock.Acquire(context.Background(), dir, fast)
	var oe *interlock.OrphansError
	if !errors.As(err, &oe) || !slices.Equal(oe.PIDs(), []int{cmd.Process.Pid}) || oe.Orphans[0].Witness != interlock.WitnessStarted {
		t.Fatalf("Acquire: %v; want orphans [%d] started for this directory", err, cmd.Process.Pid)
	}
	if rep, err := interlock.Inspect(dir, fast); err != nil || rep.State != interlock.Orphaned {
		t.Errorf("Inspect: %+v, %v; want orphans", rep, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	l = acquire(t, dir, interlock.Options{})
	if p := l.Previous(); p == nil || !errors.Is(p.Err, pidfile.ErrMalformed) || !strings.Contains(p.String(), "empty") {
		t.Errorf("Previous after an empty pidfile = %v, want it reported", p)
	}
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
