package shm

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Gone: "gone", Foreign: "foreign", Unattached: "unattached",
		Attached: "attached", State(9): "State(9)"} {
		if s.String() != want {
			t.Errorf("State %d String() = %q, want %q", int(s), s.String(), want)
		}
	}
}

func TestAnalyzeUnattached(t *testing.T) {
	dir := newDir(t)
	h := header(0x20)
	s := create(t, dir, h)
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	want := h
	want.Magic, want.Version, want.Dir = Magic, LayoutVersion, dir

	for i := range 2 { // Analyze does not remove: twice the same answer
		a, err := Analyze(s.ID, dir)
		if err != nil {
			t.Fatal(err)
		}
		if a.State != Unattached || a.ID != s.ID || a.Key != BaseKey(dir) || a.Nattch != 0 || a.PIDs != nil || a.Why != "" {
			t.Fatalf("Analyze #%d = %+v; want Unattached at %#x, nattch 0", i, a, BaseKey(dir))
		}
		sameHeader(t, "analysed header", a.Header, want)
		if d := mustStat(t, s.ID); d.Nattch != 0 || d.Perm.Mode&shmDest != 0 {
			t.Fatalf("after Analyze: nattch %d mode %#o", d.Nattch, d.Perm.Mode)
		}
	}

	a, err := Reclaim(s.ID, dir)
	if err != nil || a.State != Unattached || a.ID != s.ID {
		t.Fatalf("Reclaim = %+v, %v; want Unattached (removed)", a, err)
	}
	sameHeader(t, "reclaimed header", a.Header, want)
	assertGone(t, s.ID)
	if _, err := unix.SysvShmGet(BaseKey(dir), 0, 0); !errors.Is(err, unix.ENOENT) {
		t.Errorf("shmget(BaseKey) after Reclaim: %v, want ENOENT", err)
	}
}

func TestAnalyzeAttachedByHelper(t *testing.T) {
	dir := newDir(t)
	s := create(t, dir, header(0x30))
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	p := attachHelper(t, s.ID)

	for _, op := range []struct {
		name string
		f    func(int, Identity) (Analysis, error)
	}{{"Analyze", Analyze}, {"Reclaim", Reclaim}} {
		a, err := op.f(s.ID, dir)
		if err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		if a.State != Attached || a.Nattch != 1 || !slices.Equal(a.PIDs, []int{p.PID()}) || a.Header.Dir != dir {
			t.Fatalf("%s = %+v; want Attached, nattch 1, PIDs [%d]", op.name, a, p.PID())
		}
		if d := mustStat(t, s.ID); d.Nattch != 1 || d.Perm.Mode&shmDest != 0 || int(d.Perm.Key) != s.Key {
			t.Fatalf("after %s: nattch %d mode %#o key %#x; want untouched", op.name, d.Nattch, d.Perm.Mode, d.Perm.Key)
		}
	}

	// The helper detaches: nobody is left, and Reclaim may remove it.
	p.Send(t, "detach")
	p.Expect(t, "detached")
	if a, err := Analyze(s.ID, dir); err != nil || a.State != Unattached || a.PIDs != nil {
		t.Fatalf("Analyze after the helper detached = %+v, %v; want Unattached", a, err)
	}
	p.Kill()
	if a, err := Reclaim(s.ID, dir); err != nil || a.State != Unattached {
		t.Fatalf("Reclaim after the helper died = %+v, %v; want Unattached", a, err)
	}
	assertGone(t, s.ID)
}

// TestAnalyzeReaders: a read-only attachment is another analyzer reading
// the header (an Inspect while a server starts) and must not make the
// segment look attached; a read-write one beside it still does.
func TestAnalyzeReaders(t *testing.T) {
	dir := newDir(t)
	s := create(t, dir, header(0x32))
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	r := testutil.StartHelper(t, "attach", strconv.Itoa(s.ID), "ro")
	r.Expect(t, "attached")
	if d := mustStat(t, s.ID); d.Nattch != 1 {
		t.Fatalf("nattch %d with the reader attached, want 1", d.Nattch)
	}
	if a, err := Analyze(s.ID, dir); err != nil || a.State != Unattached || a.Nattch != 0 || a.PIDs != nil {
		t.Fatalf("Analyze with a reader attached = %+v, %v; want Unattached", a, err)
	}
	w := attachHelper(t, s.ID)
	if a, err := Analyze(s.ID, dir); err != nil || a.State != Attached || a.Nattch != 1 || !slices.Equal(a.PIDs, []int{w.PID()}) {
		t.Fatalf("Analyze with a reader and a writer attached = %+v, %v; want Attached by PID %d alone", a, err, w.PID())
	}
	w.Kill()
	r.Kill()
}

func TestAnalyzeKilledHelper(t *testing.T) {
	// A process killed while attached drops its attachment at exit.
	dir := newDir(t)
	s := create(t, dir, header(0x31))
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	p := attachHelper(t, s.ID)
	if a, err := Reclaim(s.ID, dir); err != nil || a.State != Attached {
		t.Fatalf("Reclaim with helper attached = %+v, %v", a, err)
	}
	mustStat(t, s.ID)
	p.Kill()
	if a, err := Reclaim(s.ID, dir); err != nil || a.State != Unattached || a.Nattch != 0 {
		t.Fatalf("Reclaim after killing the helper = %+v, %v; want Unattached", a, err)
	}
	assertGone(t, s.ID)
}

func TestAnalyzeOwnAttachment(t *testing.T) {
	dir := newDir(t)
	s := create(t, dir, header(0x40))

	a, err := Reclaim(s.ID, dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.State != Attached || a.Nattch != 1 || len(a.PIDs) != 0 {
		t.Fatalf("Reclaim of our own attached segment = %+v; want Attached, nattch 1, no PIDs (ours excluded)", a)
	}
	if d := mustStat(t, s.ID); d.Nattch != 1 || d.Perm.Mode&shmDest != 0 {
		t.Fatalf("after Reclaim: nattch %d mode %#o; want untouched", d.Nattch, d.Perm.Mode)
	}

	// With a helper attached too, only the helper is listed.
	p := attachHelper(t, s.ID)
	a, err = Analyze(s.ID, dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.State != Attached || a.Nattch != 2 || !slices.Equal(a.PIDs, []int{p.PID()}) {
		t.Fatalf("Analyze = %+v; want Attached, nattch 2, PIDs [%d]", a, p.PID())
	}
}

func TestAnalyzeGone(t *testing.T) {
	dir := newDir(t)
	id := plant(t, unix.IPC_PRIVATE, Size, ourHeader(dir, 1))
	if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []int{id, -1, 1<<31 - 1} {
		for _, f := range []func(int, Identity) (Analysis, error){Analyze, Reclaim} {
			a, err := f(bad, dir)
			if err != nil || a.State != Gone || a.ID != bad || a.Key != -1 {
				t.Errorf("analysis of missing segment %d = %+v, %v; want Gone, no error", bad, a, err)
			}
		}
	}
	if got, err := Scan(dir, testOwners, true, id); err != nil || len(got) != 0 {
		t.Errorf("Scan with a missing id = %+v, %v; want nothing", got, err)
	}
	if _, err := Stat(id); err == nil {
		t.Errorf("Stat of a removed segment succeeded")
	}
}

// ---- create among other segments ----

func TestScanWindow(t *testing.T) {
	dir := newDir(t)
	base := BaseKey(dir)
	foreignID := plant(t, base, Size, ourHeader(otherDir(dir), 5))
	s := create(t, dir, header(0x90))
	if s.Key != nextKey(base) {
		t.Fatalf("Create used %#x, want %#x", s.Key, nextKey(base))
	}
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}

	check := func(got []Analysis, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != s.ID || got[0].Key != s.Key || got[0].State != Unattached ||
			got[0].Header.Token != header(0x90).Token {
			t.Fatalf("Scan = %+v; want exactly segment %d at %#x, Unattached", got, s.ID, s.Key)
		}
	}
	check(Scan(dir, testOwners, false))
	mustStat(t, s.ID)
	// Listed once though found both by id and by key; foreign ids and -1
	// are ignored.
	check(Scan(dir, testOwners, false, s.ID, -1, foreignID, s.ID))
	mustStat(t, s.ID)

	// The segments are listed, not probed by key: another directory's
	// segment is found wherever it is, and only it.
	if got, err := Scan(otherDir(dir), testOwners, false); err != nil || len(got) != 1 || got[0].ID != foreignID {
		t.Errorf("Scan for another directory = %+v, %v; want its segment %d alone", got, err, foreignID)
	}

	check(Scan(dir, testOwners, true))
	assertGone(t, s.ID)
	if d := mustStat(t, foreignID); int(d.Perm.Key) != base || !bytes.Equal(contents(t, foreignID), ourHeader(otherDir(dir), 5)) {
		t.Errorf("foreign segment touched by Scan")
	}
	if got, err := Scan(dir, testOwners, false); err != nil || len(got) != 0 {
		t.Errorf("Scan after removal = %+v, %v; want nothing", got, err)
	}
}

func TestScanByIDAfterKeyDestroyed(t *testing.T) {
	dir := newDir(t)
	s := create(t, dir, header(0xa0))
	p := attachHelper(t, s.ID)
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.SysvShmCtl(s.ID, unix.IPC_RMID, nil); err != nil {
		t.Fatal(err)
	}
	if d := mustStat(t, s.ID); d.Perm.Key != unix.IPC_PRIVATE || d.Perm.Mode&shmDest == 0 || d.Nattch != 1 {
		t.Fatalf("after IPC_RMID: key %#x mode %#o nattch %d; want private, SHM_DEST, 1", d.Perm.Key, d.Perm.Mode, d.Nattch)
	}

	// Its key is gone, but the kernel's list still shows it: found with
	// or without its id.
	for i, remove := range []bool{false, true, false, true} {
		var ids []int
		if i < 2 {
			ids = []int{s.ID}
		}
		got, err := Scan(dir, testOwners, remove, ids...)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != s.ID || got[0].State != Attached || got[0].Key != 0 ||
			got[0].Nattch != 1 || !slices.Equal(got[0].PIDs, []int{p.PID()}) || got[0].Header.Dir != dir {
			t.Fatalf("Scan(remove=%v, %d) = %+v; want it Attached by %d", remove, s.ID, got, p.PID())
		}
		mustStat(t, s.ID)
	}

	p.Kill()
	assertGone(t, s.ID)
	if a, err := Analyze(s.ID, dir); err != nil || a.State != Gone {
		t.Errorf("Analyze after the last attachment went = %+v, %v; want Gone", a, err)
	}
}
