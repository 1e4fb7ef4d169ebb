package interlock_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// startWithEnv starts a process that carries env and no descriptor of the
// directory: a server that closed everything it inherited.
func startWithEnv(t *testing.T, env ...string) int {
	t.Helper()
	cmd := exec.Command("/bin/sleep", "300")
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

func wantOrphans(t *testing.T, what string, err error, pid int, w interlock.Witness) {
	t.Helper()
	var oe *interlock.OrphansError
	if !errors.As(err, &oe) || !slices.Equal(oe.PIDs(), []int{pid}) || oe.Orphans[0].Witness != w {
		t.Errorf("%s: %v; want orphan %d (%s)", what, err, pid, w)
	}
}

// TestStoppedRecordRewrittenLaterIsSearched: a stopped record skips the
// survivor search only while it is the last thing written to the pidfile.
// The threat is not a forger (whoever can write the pidfile can do worse)
// but a stale record put back in place, as a restore from a backup or a cp
// over the file does, while a later holder's server lives on with its
// descriptors closed: the pidfile's ctime then no longer matches the
// record's stopped_at, and the search runs and finds the server. A stopped
// record without stopped_at (written by an older dirlockd) is searched too.
func TestStoppedRecordRewrittenLaterIsSearched(t *testing.T) {
	for _, c := range []struct {
		name      string
		stoppedAt string // "" drops the key
	}{{"restored", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)}, {"older-dirlockd", ""}} {
		t.Run(c.name, func(t *testing.T) {
			dir := testutil.DataDir(t)
			path := filepath.Join(dir, pidfile.DefaultName)
			acquire(t, dir, interlock.Options{}).Release()
			rec := readRecord(t, dir)
			if rec.Status != pidfile.Stopped || rec.Extra["stopped_at"] == "" {
				t.Fatalf("released record %+v: want stopped with stopped_at", rec)
			}
			if c.stoppedAt == "" {
				delete(rec.Extra, "stopped_at")
			} else {
				rec.Extra["stopped_at"] = c.stoppedAt
			}
			server := startWithEnv(t, interlock.PidfileEnv+"="+path)
			if err := os.WriteFile(path, rec.Marshal(), 0o600); err != nil { // in place: same inode
				t.Fatal(err)
			}
			rep, err := interlock.Inspect(dir, fast)
			if err != nil || rep.State != interlock.Orphaned {
				t.Fatalf("Inspect: %+v, %v; want orphans", rep, err)
			}
			wantOrphans(t, "Inspect", rep.Err, server, interlock.WitnessStarted)
			_, err = interlock.Acquire(t.Context(), dir, fast)
			wantOrphans(t, "Acquire", err, server, interlock.WitnessStarted)
		})
	}
}

// TestCleanStopSkipsTheSearch: the record Release leaves is trusted to mean
// that the tree is gone (dirlockd run releases only then), so a process
// carrying DIRLOCKD_PIDFILE is not looked for: this is the skip that makes
// a check of a released directory cost no look at other processes. The
// same record with the lock still held (a child that inherited the
// descriptor outlived the release) is no clean stop: the lock says so.
func TestCleanStopSkipsTheSearch(t *testing.T) {
	dir := testutil.DataDir(t)
	path := filepath.Join(dir, pidfile.DefaultName)
	acquire(t, dir, interlock.Options{}).Release()
	startWithEnv(t, interlock.PidfileEnv+"="+path)
	if rep, err := interlock.Inspect(dir, fast); err != nil || rep.State != interlock.Free || rep.Segments != nil {
		t.Errorf("Inspect after a clean stop: %+v, %v; want free, without a search", rep, err)
	}

	dir = testutil.DataDir(t)
	child := releasedWithInheritor(t, dir)
	if rec := readRecord(t, dir); rec.Status != pidfile.Stopped {
		t.Fatalf("record %+v, want stopped", rec)
	}
	rep, err := interlock.Inspect(dir, fast)
	if err != nil || rep.State != interlock.Orphaned {
		t.Fatalf("Inspect of a stopped record whose lock a child still holds: %+v, %v; want orphans", rep, err)
	}
	wantOrphans(t, "Inspect", rep.Err, child, interlock.WitnessLock)
	killWait(t, child)
}

// TestStoppedRecordWithSegmentAttachedIsSearched: a stopped record whose
// segment still exists (Release removed it, a process of the tree is still
// attached) is no clean stop, whatever the writer of the record promised.
func TestStoppedRecordWithSegmentAttachedIsSearched(t *testing.T) {
	dir := testutil.DataDir(t)
	l := acquire(t, dir, interlock.Options{})
	survivor, err := unix.SysvShmAttach(l.Segment().ID, 0, 0) // a second attachment outlives the release
	if err != nil {
		t.Fatal(err)
	}
	defer unix.SysvShmDetach(survivor)
	l.Release()
	rep, err := interlock.Inspect(dir, fast)
	if err != nil || rep.State != interlock.Orphaned {
		t.Fatalf("Inspect of a stopped record whose segment is still attached: %+v, %v; want orphans", rep, err)
	}
}

// TestProvenHolderNamedAlone: a held directory whose recorded holder proves
// itself from its own descriptors is answered without looking at other
// processes (check's exit code needs no more); ListHolders (status) still
// names every process sharing the lock.
func TestProvenHolderNamedAlone(t *testing.T) {
	dir := testutil.DataDir(t)
	_, held, child := holdWithInheritor(t, dir)
	holder, _ := strconv.Atoi(held)
	rep, err := interlock.Inspect(dir, fast)
	if err != nil || rep.State != interlock.Held || !slices.Equal(rep.Holders, []int{holder}) {
		t.Errorf("Inspect: %+v, %v; want held by [%d]", rep, err, holder)
	}
	want := []int{holder, child}
	slices.Sort(want)
	rep, err = interlock.Inspect(dir, interlock.Options{ListHolders: true})
	if err != nil || rep.State != interlock.Held || !slices.Equal(rep.Holders, want) {
		t.Errorf("Inspect with ListHolders: %+v, %v; want held by %v", rep, err, want)
	}
}

// TestInspectAllOnePass: one call answers every directory, each as Inspect
// alone would: a crashed holder with a survivor carrying its token, a clean
// stop, a directory whose pidfile was deleted under a server started for
// it, one never used, and an invalid one.
func TestInspectAllOnePass(t *testing.T) {
	crashed := testutil.DataDir(t)
	h := testutil.StartHelper(t, "hold", crashed)
	h.Expect(t, "held")
	h.Send(t, "spawn-token")
	survivor, _ := strconv.Atoi(h.Expect(t, "child"))
	killLater(t, survivor)
	h.Kill()

	clean := testutil.DataDir(t)
	acquire(t, clean, interlock.Options{}).Release()

	deleted := testutil.DataDir(t)
	acquire(t, deleted, interlock.Options{}).Release()
	path := filepath.Join(deleted, pidfile.DefaultName)
	server := startWithEnv(t, interlock.PidfileEnv+"="+path)
	os.Remove(path)

	unused := testutil.DataDir(t)
	missing := filepath.Join(unused, "missing")

	got := interlock.InspectAll([]string{crashed, clean, deleted, unused, missing}, fast)
	if len(got) != 5 {
		t.Fatalf("InspectAll returned %d answers for 5 directories", len(got))
	}
	for i, want := range []interlock.State{interlock.Orphaned, interlock.Free, interlock.Orphaned, interlock.Free} {
		if got[i].Err != nil || got[i].Report.State != want {
			t.Errorf("directory %d: %+v, %v; want %s", i, got[i].Report, got[i].Err, want)
		}
	}
	wantOrphans(t, "crashed", got[0].Report.Err, survivor, interlock.WitnessToken)
	wantOrphans(t, "deleted pidfile", got[2].Report.Err, server, interlock.WitnessStarted)
	if !errors.Is(got[4].Err, interlock.ErrInvalid) {
		t.Errorf("missing directory: %v, want ErrInvalid", got[4].Err)
	}
	killWait(t, survivor)
	acquire(t, crashed, interlock.Options{}) // reclaims the crashed holder's segment
}
