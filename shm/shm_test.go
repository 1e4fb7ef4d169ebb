package shm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

// ---- helpers ----

// newDir makes a fresh data directory and returns its identity.
func newDir(t *testing.T) Identity {
	t.Helper()
	id, err := DirIdentity(testutil.DataDir(t))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// otherDir returns an identity that is not dir's.
func otherDir(dir Identity) Identity {
	return Identity{Dev: dir.Dev + 1, Ino: dir.Ino ^ 0x5a5a}
}

// removeAtCleanup marks segment id for removal when the test ends.
func removeAtCleanup(t *testing.T, id int) {
	t.Helper()
	t.Cleanup(func() {
		if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil && !gone(err) {
			t.Errorf("cleanup: IPC_RMID %d: %v", id, err)
		}
	})
}

// plant creates a segment of size bytes at key holding content, as some
// other program would, and removes it when the test ends. It is left
// unattached.
func plant(t *testing.T, key, size int, content []byte) int {
	t.Helper()
	id, err := unix.SysvShmGet(key, size, unix.IPC_CREAT|unix.IPC_EXCL|0o600)
	if err != nil {
		t.Fatalf("plant shmget(0x%08x, %d): %v", uint32(key), size, err)
	}
	removeAtCleanup(t, id)
	mem, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		t.Fatalf("plant shmat(%d): %v", id, err)
	}
	copy(mem, content)
	if err := unix.SysvShmDetach(mem); err != nil {
		t.Fatalf("plant shmdt(%d): %v", id, err)
	}
	return id
}

// ourHeader returns the bytes of a segment header naming dir.
func ourHeader(dir Identity, token byte) []byte {
	b := make([]byte, Size)
	h := Header{Magic: Magic, Version: LayoutVersion, CreatorPID: 999999, CreatorStart: 77, Dir: dir,
		Created: time.Unix(1_600_000_000, 0)}
	h.Token[0] = token
	h.encode(b)
	return b
}

// contents reads segment id through a read-only attachment of its own.
func contents(t *testing.T, id int) []byte {
	t.Helper()
	mem, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY)
	if err != nil {
		t.Fatalf("shmat(%d, SHM_RDONLY): %v", id, err)
	}
	b := bytes.Clone(mem)
	if err := unix.SysvShmDetach(mem); err != nil {
		t.Fatalf("shmdt(%d): %v", id, err)
	}
	return b
}

// mustStat returns the kernel's description of segment id.
func mustStat(t *testing.T, id int) *unix.SysvShmDesc {
	t.Helper()
	d, err := stat(id)
	if err != nil {
		t.Fatalf("segment %d should exist: %v", id, err)
	}
	return d
}

// assertGone fails unless segment id no longer exists.
func assertGone(t *testing.T, id int) {
	t.Helper()
	if d, err := Stat(id); err == nil {
		t.Fatalf("segment %d still exists (key 0x%08x, nattch %d)", id, uint32(d.Key), d.Nattch)
	} else if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
		t.Fatalf("Stat(%d) of a removed segment: %v, want EINVAL/EIDRM", id, err)
	}
	a, err := Analyze(id, Identity{})
	if err != nil || a.State != Gone {
		t.Fatalf("Analyze(%d) of a removed segment = %v, %v; want Gone, nil", id, a.State, err)
	}
}

// create runs Create and detaches and removes the segment when the test
// ends.
func create(t *testing.T, dir Identity, h Header) *Segment {
	t.Helper()
	s, err := Create(dir, testOwners, h)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Detach(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := s.Remove(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return s
}

// attachHelper starts a helper process attached to segment id.
func attachHelper(t *testing.T, id int) *testutil.Proc {
	t.Helper()
	p := testutil.StartHelper(t, "attach", strconv.Itoa(id))
	p.Expect(t, "attached")
	return p
}

// segmentSet lists the segments in our IPC namespace, sorted.
func segmentSet(t *testing.T) []int {
	t.Helper()
	ids, err := testutil.Segments()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

// header returns a header with every caller-set field distinctive.
func header(token byte) Header {
	h := Header{CreatorPID: os.Getpid(), CreatorStart: 0x1122334455667788,
		Created: time.Unix(1_700_000_000, 123_456_789)}
	for i := range h.BootID {
		h.BootID[i] = byte(0xb0 + i)
		h.Token[i] = token + byte(i)
	}
	return h
}

// sameHeader compares headers, Created by instant.
func sameHeader(t *testing.T, what string, got, want Header) {
	t.Helper()
	if !got.Created.Equal(want.Created) {
		t.Errorf("%s: Created = %v, want %v", what, got.Created, want.Created)
	}
	got.Created, want.Created = time.Time{}, time.Time{}
	if got != want {
		t.Errorf("%s: header = %+v, want %+v", what, got, want)
	}
}

// ---- keys ----

func TestCreateAttachRemove(t *testing.T) {
	dir := newDir(t)
	in := header(0x10)
	// Create fills in Magic, Version and Dir whatever the caller put there.
	in.Magic, in.Version, in.Dir = 1, 99, otherDir(dir)
	s := create(t, dir, in)

	base := BaseKey(dir)
	if s.Key != base {
		t.Errorf("Key = %#x, want BaseKey %#x", s.Key, base)
	}
	d := mustStat(t, s.ID)
	if int(d.Perm.Key) != base || d.Segsz != Size || d.Perm.Mode&0o777 != 0o600 ||
		d.Nattch != 1 || int(d.Cpid) != os.Getpid() || d.Perm.Mode&shmDest != 0 {
		t.Errorf("segment: key %#x size %d mode %#o nattch %d cpid %d; want key %#x size %d mode 0600 nattch 1 cpid %d",
			d.Perm.Key, d.Segsz, d.Perm.Mode, d.Nattch, d.Cpid, base, Size, os.Getpid())
	}
	if id, err := unix.SysvShmGet(base, 0, 0); err != nil || id != s.ID {
		t.Errorf("shmget(BaseKey) = %d, %v; want %d", id, err, s.ID)
	}

	want := in
	want.Magic, want.Version, want.Dir = Magic, LayoutVersion, dir
	sameHeader(t, "Segment.Header", s.Header(), want)
	raw := contents(t, s.ID)
	sameHeader(t, "header read back", decodeHeader(raw), want)
	if string(raw[:8]) != "DLOCKSHM" || len(raw) != Size {
		t.Errorf("segment starts %q and has %d bytes", raw[:8], len(raw))
	}

	// Attach by id.
	a, err := Attach(s.ID, dir)
	if err != nil {
		t.Fatalf("Attach(%d, dir): %v", s.ID, err)
	}
	if a.ID != s.ID || a.Key != base {
		t.Errorf("Attach: id %d key %#x, want %d %#x", a.ID, a.Key, s.ID, base)
	}
	sameHeader(t, "attached Header", a.Header(), want)
	if n := mustStat(t, s.ID).Nattch; n != 2 {
		t.Errorf("nattch with two attachments = %d", n)
	}
	if err := a.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := a.Detach(); err != nil {
		t.Errorf("second Detach: %v", err)
	}
	if n := mustStat(t, s.ID).Nattch; n != 1 {
		t.Errorf("nattch after Detach = %d, want 1", n)
	}

	// Attach naming another directory fails, and leaves no attachment.
	if b, err := Attach(s.ID, otherDir(dir)); err == nil {
		b.Detach()
		t.Errorf("Attach(%d, other directory) succeeded", s.ID)
	} else if !strings.Contains(err.Error(), "not this data directory's") {
		t.Errorf("Attach(other directory): %v", err)
	}
	if n := mustStat(t, s.ID).Nattch; n != 1 {
		t.Errorf("nattch after refused Attach = %d, want 1", n)
	}

	// Detach and remove.
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	if n := mustStat(t, s.ID).Nattch; n != 0 {
		t.Errorf("nattch after creator's Detach = %d", n)
	}
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, s.ID)
	if a, err := Analyze(s.ID, dir); err != nil || a.State != Gone || a.ID != s.ID {
		t.Errorf("Analyze after Remove = %+v, %v; want Gone", a, err)
	}
	if _, err := unix.SysvShmGet(base, 0, 0); !errors.Is(err, unix.ENOENT) {
		t.Errorf("shmget(BaseKey) after Remove: %v, want ENOENT", err)
	}
	if err := s.Remove(); err != nil {
		t.Errorf("Remove of a removed segment: %v", err)
	}
	if _, err := Attach(s.ID, dir); err == nil {
		t.Errorf("Attach of a removed segment succeeded")
	}
}

// ---- analyze ----

func TestCreateSkipsForeign(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	randomBytes := make([]byte, Size)
	for i := range randomBytes {
		randomBytes[i] = byte(r.Uint32())
	}
	cases := []struct {
		name    string
		size    int
		content func(dir Identity) []byte
		why     func(dir Identity) string
	}{
		{"random", Size, func(Identity) []byte { return randomBytes },
			func(Identity) string { return fmt.Sprintf("magic %#x", binary.LittleEndian.Uint64(randomBytes)) }},
		{"other directory", Size, func(dir Identity) []byte { return ourHeader(otherDir(dir), 2) },
			func(dir Identity) string {
				o := otherDir(dir)
				return fmt.Sprintf("names data directory dev %d ino %d", o.Dev, o.Ino)
			}},
		{"too small", 64, func(dir Identity) []byte { return ourHeader(dir, 3)[:64] },
			func(Identity) string { return "size 64" }},
		{"unreadable header of ours", headerSize - 1, func(dir Identity) []byte { return ourHeader(dir, 4)[:headerSize-1] },
			func(Identity) string { return fmt.Sprintf("size %d", headerSize-1) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := newDir(t)
			base := BaseKey(dir)
			planted := plant(t, base, c.size, c.content(dir))
			before := contents(t, planted)

			s := create(t, dir, header(0x50))
			if s.Key != nextKey(base) || s.ID == planted {
				t.Fatalf("Create: id %d key %#x; want a new segment at %#x (planted %d at %#x)",
					s.ID, s.Key, nextKey(base), planted, base)
			}
			if d := mustStat(t, s.ID); int(d.Perm.Key) != nextKey(base) {
				t.Errorf("new segment's kernel key %#x, want %#x", d.Perm.Key, nextKey(base))
			}
			if s.Header().Dir != dir || s.Header().Magic != Magic {
				t.Errorf("new segment's header %+v", s.Header())
			}

			d := mustStat(t, planted)
			if int(d.Perm.Key) != base || d.Nattch != 0 || d.Segsz != uint64(c.size) || d.Perm.Mode&shmDest != 0 {
				t.Errorf("planted segment: key %#x nattch %d size %d mode %#o; want untouched", d.Perm.Key, d.Nattch, d.Segsz, d.Perm.Mode)
			}
			if !bytes.Equal(contents(t, planted), before) {
				t.Errorf("planted segment's content changed")
			}

			a, err := Reclaim(planted, dir)
			if err != nil || a.State != Foreign || a.Why != c.why(dir) || a.Key != base || a.PIDs != nil {
				t.Errorf("Reclaim(planted) = %+v, %v; want Foreign, Why %q", a, err, c.why(dir))
			}
			mustStat(t, planted)
			if !bytes.Equal(contents(t, planted), before) {
				t.Errorf("planted segment's content changed by Reclaim")
			}
		})
	}
}

func TestCreateReclaimsOursUnattached(t *testing.T) {
	dir := newDir(t)
	base := BaseKey(dir)
	planted := plant(t, base, Size, ourHeader(dir, 0xaa))

	h := header(0x60)
	s := create(t, dir, h)
	if s.Key != base || s.ID == planted {
		t.Fatalf("Create: id %d key %#x; want a new segment at BaseKey %#x (old %d)", s.ID, s.Key, base, planted)
	}
	assertGone(t, planted)
	if got := s.Header(); got.Token != h.Token || got.CreatorPID != os.Getpid() {
		t.Errorf("new segment's header %+v is not the new holder's", got)
	}
	if id, err := unix.SysvShmGet(base, 0, 0); err != nil || id != s.ID {
		t.Errorf("shmget(BaseKey) = %d, %v; want %d", id, err, s.ID)
	}
	if _, err := unix.SysvShmGet(nextKey(base), 0, 0); !errors.Is(err, unix.ENOENT) {
		t.Errorf("shmget(BaseKey+1): %v; want ENOENT (nothing created there)", err)
	}
}

func TestCreateStopsAtOursAttached(t *testing.T) {
	dir := newDir(t)
	base := BaseKey(dir)
	planted := plant(t, base, Size, ourHeader(dir, 0xbb))
	p := attachHelper(t, planted)
	before := contents(t, planted)
	segs := segmentSet(t)

	s, err := Create(dir, testOwners, header(0x70))
	if err == nil {
		s.Detach()
		s.Remove()
		t.Fatalf("Create succeeded (id %d key %#x) while our old segment is attached", s.ID, s.Key)
	}
	if !errors.Is(err, ErrAttached) {
		t.Errorf("errors.Is(%v, ErrAttached) = false", err)
	}
	var ae *AttachedError
	if !errors.As(err, &ae) {
		t.Fatalf("error %T %v is not an *AttachedError", err, err)
	}
	if ae.ID != planted || ae.Key != base || ae.State != Attached || ae.Nattch != 1 ||
		!slices.Equal(ae.PIDs, []int{p.PID()}) || ae.Header.Token[0] != 0xbb {
		t.Errorf("AttachedError = %+v; want segment %d at %#x, nattch 1, PIDs [%d]", ae.Analysis, planted, base, p.PID())
	}
	if msg := err.Error(); !strings.Contains(msg, strconv.Itoa(p.PID())) || !strings.Contains(msg, strconv.Itoa(planted)) {
		t.Errorf("message %q names neither the helper %d nor the segment %d", msg, p.PID(), planted)
	}

	if d := mustStat(t, planted); d.Nattch != 1 || int(d.Perm.Key) != base || d.Perm.Mode&shmDest != 0 {
		t.Errorf("old segment: nattch %d key %#x mode %#o; want untouched", d.Nattch, d.Perm.Key, d.Perm.Mode)
	}
	if !bytes.Equal(contents(t, planted), before) {
		t.Errorf("old segment's content changed")
	}
	if after := segmentSet(t); !slices.Equal(after, segs) {
		t.Errorf("segments %v after a failed Create, %v before", after, segs)
	}
}
