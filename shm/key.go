package shm

import (
	"encoding/binary"
	"hash/fnv"
	"os"

	"golang.org/x/sys/unix"
)

// ProbeLimit is how many consecutive keys, from a directory's base key, are
// tried when creating a segment and scanned when looking for old ones.
//
// The key window (BaseKey and ProbeLimit) is part of the format, like the
// header: tools that look for a directory's segments (ipcs scripts, the
// reliability suite, which plants foreign and stale segments in it) find
// them there.
const ProbeLimit = 128

// Identity identifies a data directory: its device and inode numbers. A
// directory that is moved keeps it; a copy does not.
type Identity struct {
	Dev, Ino uint64
}

// DirIdentity stats dir.
func DirIdentity(dir string) (Identity, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return Identity{}, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	return Identity{Dev: st.Dev, Ino: st.Ino}, nil
}

// BaseKey returns the first key tried for dir. It is a hash of the
// directory's identity, never IPC_PRIVATE (0), and chosen so that the
// ProbeLimit keys probed from it never reach the first 2*ProbeLimit keys
// above PostgreSQL's first key (the inode's low 32 bits), so the two never
// probe the same keys for the same directory.
func BaseKey(dir Identity) int {
	k := rawKey(dir)
	if k == 0 {
		k = 1
	}
	if pg := uint32(dir.Ino); k-(pg-2*ProbeLimit) < 4*ProbeLimit {
		k = pg + 4*ProbeLimit
		if k == 0 {
			k = 1
		}
	}
	return int(int32(k))
}

// rawKey is the hash BaseKey starts from: FNV-1a of "dirlockd", the device
// and the inode, little-endian.
func rawKey(dir Identity) uint32 {
	h := fnv.New32a()
	var b [24]byte
	copy(b[:8], "dirlockd")
	binary.LittleEndian.PutUint64(b[8:], dir.Dev)
	binary.LittleEndian.PutUint64(b[16:], dir.Ino)
	h.Write(b[:])
	return h.Sum32()
}

// nextKey steps to the next key, wrapping around and skipping IPC_PRIVATE.
func nextKey(k int) int {
	n := uint32(k) + 1
	if n == 0 {
		n = 1
	}
	return int(int32(n))
}
