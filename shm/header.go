package shm

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Magic marks a dirlockd segment ("DLOCKSHM" read as little-endian bytes).
const Magic uint64 = 0x4d48534b434f4c44

// LayoutVersion is the header layout this package writes.
const LayoutVersion = 1

// Header is what a segment says about itself.
type Header struct {
	Magic        uint64
	Version      uint32
	CreatorPID   int
	CreatorStart uint64   // creator's start time, clock ticks since boot
	BootID       [16]byte // kernel boot ID at creation
	Dir          Identity
	Created      time.Time
	Token        [16]byte // the acquisition token
}

const headerSize = 88

func (h *Header) encode(b []byte) {
	le := binary.LittleEndian
	le.PutUint32(b[8:], h.Version)
	le.PutUint64(b[16:], uint64(h.CreatorPID))
	le.PutUint64(b[24:], h.CreatorStart)
	copy(b[32:48], h.BootID[:])
	le.PutUint64(b[48:], h.Dir.Dev)
	le.PutUint64(b[56:], h.Dir.Ino)
	le.PutUint64(b[64:], uint64(h.Created.UnixNano()))
	copy(b[72:88], h.Token[:])
	// The magic goes last: a reader that sees it sees a whole header.
	le.PutUint64(b[0:], h.Magic)
}

func decodeHeader(b []byte) Header {
	le := binary.LittleEndian
	var h Header
	h.Magic = le.Uint64(b[0:])
	h.Version = le.Uint32(b[8:])
	h.CreatorPID = int(le.Uint64(b[16:]))
	h.CreatorStart = le.Uint64(b[24:])
	copy(h.BootID[:], b[32:48])
	h.Dir = Identity{Dev: le.Uint64(b[48:]), Ino: le.Uint64(b[56:])}
	h.Created = time.Unix(0, int64(le.Uint64(b[64:])))
	copy(h.Token[:], b[72:88])
	return h
}

// foreign says why mem is not a header of dir's, or "" when it is.
func foreign(mem []byte, dir Identity) string {
	if len(mem) < headerSize {
		return "too small"
	}
	h := decodeHeader(mem)
	switch {
	case h.Magic != Magic:
		return fmt.Sprintf("magic %#x", h.Magic)
	case h.Dir != dir:
		return fmt.Sprintf("names data directory dev %d ino %d", h.Dir.Dev, h.Dir.Ino)
	}
	return ""
}
