package shm

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

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
