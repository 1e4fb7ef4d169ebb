package shm

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

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

	// Every key taken (anybody can fill the window: the keys are no
	// secret): the segment is made with IPC_PRIVATE, and Scan finds it.
	s, err := Create(dir, testOwners, header(0x80))
	if err != nil {
		t.Fatalf("Create with %d foreign segments in the way: %v; want a private segment", ProbeLimit, err)
	}
	if s.Key != unix.IPC_PRIVATE {
		t.Errorf("Create used key %#x with the window full; want IPC_PRIVATE", s.Key)
	}
	if got, err := Scan(dir, testOwners, false); err != nil || len(got) != 1 || got[0].ID != s.ID || got[0].State != Attached {
		t.Errorf("Scan = %+v, %v; want the private segment %d, attached", got, err, s.ID)
	}
	s.Detach()
	s.Remove()
	if _, err := unix.SysvShmGet(k, 0, 0); !errors.Is(err, unix.ENOENT) {
		t.Errorf("key %#x past the window: %v; want ENOENT (not probed)", k, err)
	}
	if after := segmentSet(t); !slices.Equal(after, segs) {
		t.Errorf("segments left by Create and Remove: %d before, %d after", len(segs), len(after))
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
