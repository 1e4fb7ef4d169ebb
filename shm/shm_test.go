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
	s, err := Create(dir, h)
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

func TestNextKey(t *testing.T) {
	for _, c := range []struct{ in, want int }{
		{1, 2},
		{0x1234, 0x1235},
		{0x7ffffffe, 0x7fffffff},
		{0x7fffffff, -0x80000000}, // int32 overflow: key_t is signed
		{-0x80000000, -0x7fffffff},
		{-2, -1},
		{-1, 1}, // 0xffffffff wraps past IPC_PRIVATE
	} {
		if got := nextKey(c.in); got != c.want {
			t.Errorf("nextKey(%#x) = %#x, want %#x", c.in, got, c.want)
		}
	}
}

// inZone says whether a raw hash k must be moved: BaseKey moves keys whose
// window could meet PostgreSQL's first keys [pg, pg+2*ProbeLimit).
func inZone(k, pg uint32) bool { return k-(pg-2*ProbeLimit) < 4*ProbeLimit }

// checkWindow fails unless the ProbeLimit keys Create probes from BaseKey(dir)
// avoid IPC_PRIVATE and PostgreSQL's keys for dir.
func checkWindow(t *testing.T, dir Identity) {
	t.Helper()
	pg := uint32(dir.Ino)
	k := BaseKey(dir)
	if k < -1<<31 || k > 1<<31-1 {
		t.Fatalf("BaseKey(%+v) = %#x, outside int32", dir, k)
	}
	if k == 0 {
		t.Fatalf("BaseKey(%+v) = 0 (IPC_PRIVATE)", dir)
	}
	if uint32(k)-pg < 2*ProbeLimit {
		t.Fatalf("BaseKey(%+v) = %#x, within PostgreSQL's keys from %#x", dir, uint32(k), pg)
	}
	for i := range ProbeLimit {
		if k == 0 || uint32(k)-pg < 2*ProbeLimit {
			t.Fatalf("key %d of the window of %+v (base %#x) is %#x: PostgreSQL probes from %#x",
				i, dir, uint32(BaseKey(dir)), uint32(k), pg)
		}
		k = nextKey(k)
	}
}

func TestBaseKeyGolden(t *testing.T) {
	// Keys must not change between releases: a new holder finds an old
	// holder's segment by them.
	for _, c := range []struct {
		dir  Identity
		want int
	}{
		{Identity{Dev: 0x803, Ino: 0x2}, 0x735237b4},
		{Identity{Dev: 0xfd00, Ino: 0x20002}, 0x28c5d77e},
		{Identity{Dev: 0x10302, Ino: 0x1234567890}, 0x56c30f43},
		{Identity{Dev: 0x0, Ino: 0x0}, -0x515d8173},
		{Identity{Dev: ^uint64(0), Ino: ^uint64(0)}, -0x76e62e83},
	} {
		for range 3 {
			if got := BaseKey(c.dir); got != c.want {
				t.Errorf("BaseKey(%+v) = %#x, want %#x", c.dir, got, c.want)
			}
		}
	}
}

func TestBaseKeyRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(20240601, 7))
	moved := 0
	for i := range 100_000 {
		dir := Identity{Dev: r.Uint64(), Ino: r.Uint64()}
		if i%2 == 0 { // realistic: small device numbers, 32-bit inodes
			dir = Identity{Dev: uint64(r.IntN(1 << 20)), Ino: uint64(r.Uint32())}
		}
		k := BaseKey(dir)
		if k2 := BaseKey(dir); k2 != k {
			t.Fatalf("BaseKey(%+v) not deterministic: %#x then %#x", dir, k, k2)
		}
		if k == 0 {
			t.Fatalf("BaseKey(%+v) = 0", dir)
		}
		pg := uint32(dir.Ino)
		if uint32(k)-pg < 2*ProbeLimit {
			t.Fatalf("BaseKey(%+v) = %#x in [%#x, %#x+%d)", dir, uint32(k), pg, pg, 2*ProbeLimit)
		}
		raw := rawKey(dir)
		if raw != 0 && !inZone(raw, pg) {
			if k != int(int32(raw)) {
				t.Fatalf("BaseKey(%+v) = %#x, want the plain hash %#x", dir, uint32(k), raw)
			}
		} else {
			moved++
		}
		// The whole probing window, for a sample (it is 128 times the work).
		if i%10 == 0 {
			checkWindow(t, dir)
		}
	}
	if moved > 5 {
		t.Errorf("%d of 100000 random identities had their key moved; expected almost none", moved)
	}

	// Identities differing only in the device get different keys.
	seen := map[int]uint64{}
	for _, dev := range []uint64{0x801, 0x802, 0x803, 0x811, 0xfd00, 0xfd01, 0x10302, 0x10303, 1, 0} {
		k := BaseKey(Identity{Dev: dev, Ino: 131074})
		if d, dup := seen[k]; dup {
			t.Errorf("devices %#x and %#x with inode 131074 share key %#x", d, dev, k)
		}
		seen[k] = dev
	}
}

// identityHashing constructs an identity whose inode's low 32 bits are pg
// and whose raw key hash is target, by choosing the inode's high bits (the
// last four bytes hashed) with a meet-in-the-middle over FNV-1a, which is
// invertible byte by byte.
func identityHashing(t *testing.T, pg, target uint32) Identity {
	t.Helper()
	const prime = 16777619
	pinv := uint32(prime)
	for range 5 { // Newton's iteration for the inverse mod 2^32
		pinv *= 2 - prime*pinv
	}
	fw := make(map[uint32]uint32, 1<<16)
	for dev := uint64(1); dev < 200; dev++ {
		var b [20]byte
		copy(b[:8], "dirlockd")
		binary.LittleEndian.PutUint64(b[8:], dev)
		binary.LittleEndian.PutUint32(b[16:], pg)
		s := uint32(2166136261)
		for _, c := range b {
			s = (s ^ uint32(c)) * prime
		}
		clear(fw)
		for x := range uint32(1 << 16) {
			fw[((s^x&0xff)*prime^x>>8)*prime] = x
		}
		for y := range uint32(1 << 16) {
			b3, b2 := y&0xff, y>>8
			if x, ok := fw[(target*pinv^b3)*pinv^b2]; ok {
				dir := Identity{Dev: dev, Ino: uint64(pg) | uint64(x|b2<<16|b3<<24)<<32}
				if got := rawKey(dir); got != target {
					t.Fatalf("constructed %+v hashes to %#x, not %#x", dir, got, target)
				}
				return dir
			}
		}
	}
	t.Fatalf("no identity with inode low bits %#x hashing to %#x", pg, target)
	return Identity{}
}

func TestBaseKeyEdges(t *testing.T) {
	// Identities whose hash lands exactly where BaseKey must correct it.
	for _, c := range []struct {
		name        string
		pg, raw     uint32
		want        uint32
		mustBeMoved bool
	}{
		{"hash 0", 0x40000000, 0, 1, true},
		{"hash 0 next to PostgreSQL's key 1", 1, 0, 1 + 4*ProbeLimit, true},
		{"hash 0 near small inode", 100, 0, 100 + 4*ProbeLimit, true},
		{"hash at PostgreSQL's key", 1000, 1000, 1000 + 4*ProbeLimit, true},
		{"hash at PostgreSQL's 256th key", 1000, 1000 + 2*ProbeLimit - 1, 1000 + 4*ProbeLimit, true},
		{"hash just past PostgreSQL's keys", 1000, 1000 + 2*ProbeLimit, 1000 + 2*ProbeLimit, false},
		{"window ends at PostgreSQL's key", 1000, 1000 - ProbeLimit + 1, 1000 + 4*ProbeLimit, true},
		{"window ends below PostgreSQL's key", 1000, 1000 - 1, 1000 + 4*ProbeLimit, true},
		{"window well below", 1000, 1000 - 2*ProbeLimit - 1, 1000 - 2*ProbeLimit - 1, false},
		{"window across 0 into PostgreSQL's keys", 5, 0xffffff85, 5 + 4*ProbeLimit, true}, // 5 - ProbeLimit
		{"moved key wraps to 0", 0xfffffe00, 0xfffffe00, 1, true},
		{"hash near top, PostgreSQL wraps", 0xffffff80, 0x10, 0x180, true}, // 0xffffff80 + 4*ProbeLimit
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := identityHashing(t, c.pg, c.raw)
			got := BaseKey(dir)
			if uint32(got) != c.want {
				t.Errorf("BaseKey(%+v) (hash %#x, PostgreSQL from %#x) = %#x, want %#x",
					dir, c.raw, c.pg, uint32(got), c.want)
			}
			if moved := uint32(got) != c.raw; moved != c.mustBeMoved {
				t.Errorf("moved = %v, want %v", moved, c.mustBeMoved)
			}
			checkWindow(t, dir)
		})
	}
}

// ---- header ----

func TestHeaderRoundTrip(t *testing.T) {
	want := Header{
		Magic:        Magic,
		Version:      0xa1b2c3d4,
		CreatorPID:   4_194_303,
		CreatorStart: 0x0102030405060708,
		Dir:          Identity{Dev: 0xfedcba9876543210, Ino: 0x0f1e2d3c4b5a6978},
		Created:      time.Unix(1_712_345_678, 987_654_321),
	}
	for i := range 16 {
		want.BootID[i] = byte(i + 1)
		want.Token[i] = byte(0xf0 - i)
	}
	b := bytes.Repeat([]byte{0xee}, Size)
	want.encode(b)
	if string(b[:8]) != "DLOCKSHM" {
		t.Errorf("magic bytes %q, want DLOCKSHM", b[:8])
	}
	if i := slices.IndexFunc(b[headerSize:], func(c byte) bool { return c != 0xee }); i >= 0 {
		t.Errorf("encode wrote byte %d, past the %d-byte header", headerSize+i, headerSize)
	}
	sameHeader(t, "decode(encode(h))", decodeHeader(b), want)

	// Every field independently, with random values.
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		h := Header{Magic: r.Uint64(), Version: r.Uint32(), CreatorPID: int(r.Int32()), CreatorStart: r.Uint64(),
			Dir: Identity{r.Uint64(), r.Uint64()}, Created: time.Unix(0, r.Int64())}
		for i := range 16 {
			h.BootID[i], h.Token[i] = byte(r.Uint32()), byte(r.Uint32())
		}
		b := make([]byte, headerSize)
		h.encode(b)
		got := decodeHeader(b)
		if got.Created.UnixNano() != h.Created.UnixNano() {
			t.Fatalf("Created %d decoded as %d", h.Created.UnixNano(), got.Created.UnixNano())
		}
		got.Created, h.Created = time.Time{}, time.Time{}
		if got != h {
			t.Fatalf("decode(encode(%+v)) = %+v", h, got)
		}
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Gone: "gone", Foreign: "foreign", Unattached: "unattached",
		Attached: "attached", State(9): "State(9)"} {
		if s.String() != want {
			t.Errorf("State %d String() = %q, want %q", int(s), s.String(), want)
		}
	}
}

func TestDirIdentity(t *testing.T) {
	d := testutil.DataDir(t)
	id, err := DirIdentity(d)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(d, &st); err != nil {
		t.Fatal(err)
	}
	if id != (Identity{st.Dev, st.Ino}) {
		t.Errorf("DirIdentity = %+v, want dev %d ino %d", id, st.Dev, st.Ino)
	}
	_, err = DirIdentity(d + "/missing")
	var pe *os.PathError
	if !errors.As(err, &pe) || !errors.Is(err, unix.ENOENT) || pe.Path != d+"/missing" {
		t.Errorf("DirIdentity of a missing path: %v, want *os.PathError ENOENT", err)
	}
}

// ---- create, attach, remove ----

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
	if got, err := Scan(dir, true, id); err != nil || len(got) != 0 {
		t.Errorf("Scan with a missing id = %+v, %v; want nothing", got, err)
	}
	if _, err := Stat(id); err == nil {
		t.Errorf("Stat of a removed segment succeeded")
	}
}

// ---- create among other segments ----

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

	s, err := Create(dir, header(0x70))
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

func TestCreateProbeExhaustion(t *testing.T) {
	dir := newDir(t)
	keys := make([]int, ProbeLimit)
	ids := make([]int, ProbeLimit)
	k := BaseKey(dir)
	for i := range ProbeLimit {
		keys[i], ids[i] = k, plant(t, k, Size, nil) // all zero: magic 0
		k = nextKey(k)
	}
	segs := segmentSet(t)

	s, err := Create(dir, header(0x80))
	if err == nil {
		s.Detach()
		s.Remove()
		t.Fatalf("Create succeeded at key %#x with %d foreign segments in the way", s.Key, ProbeLimit)
	}
	if !strings.Contains(err.Error(), "no free SysV key") || errors.Is(err, ErrAttached) {
		t.Errorf("Create: %v; want \"no free SysV key\"", err)
	}
	if _, err := unix.SysvShmGet(k, 0, 0); !errors.Is(err, unix.ENOENT) {
		t.Errorf("key %#x past the window: %v; want ENOENT (not probed)", k, err)
	}
	if after := segmentSet(t); !slices.Equal(after, segs) {
		t.Errorf("segments changed by a failed Create: %d before, %d after", len(segs), len(after))
	}
	for i, id := range ids {
		if d := mustStat(t, id); int(d.Perm.Key) != keys[i] || d.Nattch != 0 {
			t.Errorf("planted %d: key %#x nattch %d; want %#x, 0", id, d.Perm.Key, d.Nattch, keys[i])
		}
	}

	// The last key of the window is probed: free it, and Create uses it.
	last := ids[ProbeLimit-1]
	if _, err := unix.SysvShmCtl(last, unix.IPC_RMID, nil); err != nil {
		t.Fatal(err)
	}
	s = create(t, dir, header(0x81))
	if s.Key != keys[ProbeLimit-1] {
		t.Errorf("Create with only the last key free used %#x, want %#x", s.Key, keys[ProbeLimit-1])
	}
}

// ---- scan ----

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
	check(Scan(dir, false))
	mustStat(t, s.ID)
	// Listed once though found both by id and by key; foreign ids and -1
	// are ignored.
	check(Scan(dir, false, s.ID, -1, foreignID, s.ID))
	mustStat(t, s.ID)

	if got, err := Scan(otherDir(dir), false); err != nil || len(got) != 0 {
		t.Errorf("Scan for another directory = %+v, %v; want nothing", got, err)
	}

	check(Scan(dir, true))
	assertGone(t, s.ID)
	if d := mustStat(t, foreignID); int(d.Perm.Key) != base || !bytes.Equal(contents(t, foreignID), ourHeader(otherDir(dir), 5)) {
		t.Errorf("foreign segment touched by Scan")
	}
	if got, err := Scan(dir, false); err != nil || len(got) != 0 {
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

	// Its key is gone: the window does not find it.
	if got, err := Scan(dir, true); err != nil || len(got) != 0 {
		t.Fatalf("Scan without ids = %+v, %v; want nothing", got, err)
	}
	for _, remove := range []bool{false, true} {
		got, err := Scan(dir, remove, s.ID)
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
