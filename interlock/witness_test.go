package interlock_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

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
			after, _ := os.ReadFile(path)
			switch {
			case damage == "pidfile deleted":
				// The refused start created the pidfile: it says why
				// it failed, not nothing (issue 17).
				if !bytes.Contains(after, []byte("\nstatus=stopped\n")) || !bytes.Contains(after, []byte("\nstart_failed=")) {
					t.Errorf("pidfile created by a refused Acquire: %q; want a stopped record saying the start failed", after)
				}
			case !bytes.Equal(before, after):
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

// TestFailedStartLeavesRecord: a start that creates the pidfile and is then
// refused (here by a survivor of the directory's own user carrying
// DIRLOCKD_PIDFILE) leaves a record that says so, not an empty file that
// the next start would take for a start that died before writing (issue 17
// item 6). The record never skips the next start's survivor search.
func TestFailedStartLeavesRecord(t *testing.T) {
	dir := testutil.DataDir(t)
	path := filepath.Join(dir, pidfile.DefaultName)
	survivor := startWithEnv(t, interlock.PidfileEnv+"="+path)
	_, err := interlock.Acquire(t.Context(), dir, fast)
	wantOrphans(t, "Acquire", err, survivor, interlock.WitnessStarted)
	rec := readRecord(t, dir)
	if rec.Status != pidfile.Stopped || !strings.Contains(rec.Extra["start_failed"], "still in use") || rec.Extra["stopped_at"] != "" {
		t.Fatalf("record after the failed start: %+v; want stopped, start_failed naming the survivors, no stopped_at", rec)
	}
	rep, err := interlock.Inspect(dir, fast)
	if err != nil || rep.State != interlock.Orphaned {
		t.Fatalf("Inspect with the survivor alive: %+v, %v; want orphans (the record skips no search)", rep, err)
	}
	killWait(t, survivor)
	l := acquire(t, dir, fast)
	defer l.Release()
	if p := l.Previous(); p == nil || !strings.Contains(p.String(), "failed before it started anything") {
		t.Errorf("Previous = %v; want the failed start", p)
	}
}
