package interlock_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

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
