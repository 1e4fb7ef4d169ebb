package pidfile

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParse checks that Parse never panics, that it fails only with
// ErrMalformed, and that whatever it accepts Marshal writes back in a form
// Parse accepts as the same record. Each input is also tried with a correct
// checksum line appended, so that the fuzzer gets past the checksum to the
// decoding of the fields.
func FuzzParse(f *testing.F) {
	valid := testRecord(4242, "tok-fuzz").Marshal()
	f.Add(valid)
	for i := 0; i < len(valid); i += 7 {
		f.Add(valid[:i])
	}
	f.Add(valid[:len(valid)-1])
	for _, b := range bodyLines(f, valid) {
		f.Add([]byte(b + "\n"))
	}
	body := valid[:bytes.LastIndex(valid, []byte("crc32c="))]
	f.Add(body)
	f.Add(append(bytes.Clone(body), "shm_key=0x80000000\n"...))
	f.Add(append(bytes.Clone(body), "crc32c=00000000\n"...))
	f.Add(append(bytes.Clone(body), "k\r=v\n"...))
	f.Add(bytes.Replace(body, []byte("start_time=2025-03-04T04:06:07.890123456Z"), []byte("start_time=9999-12-31T23:59:59-00:01"), 1))
	f.Add(bytes.Replace(body, []byte("shm_key=0x1234abcd"), []byte("shm_key=0xffffffff"), 1))
	f.Add([]byte("hello, world\n"))
	f.Add([]byte{0x00, 0xff, 0xfe, '\n', 0x80})
	f.Add([]byte("crc32c=00000000\n"))
	f.Add([]byte("\n\n\n"))

	f.Fuzz(func(t *testing.T, b []byte) {
		checkParse(t, b)
		sb := bytes.Clone(b)
		if len(sb) > 0 && sb[len(sb)-1] != '\n' {
			sb = append(sb, '\n')
		}
		checkParse(t, withSum(sb))
	})
}

func checkParse(t *testing.T, b []byte) {
	r, err := Parse(b)
	if err != nil {
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("Parse(%q) failed without ErrMalformed: %v", b, err)
		}
		if r != nil {
			t.Fatalf("Parse(%q) returned a record with its error", b)
		}
		return
	}
	m := r.Marshal()
	r2, err := Parse(m)
	if err != nil {
		t.Fatalf("Parse accepted %q as %+v, but rejects its Marshal %q: %v", b, r, m, err)
	}
	if !sameRecord(r, r2) {
		t.Fatalf("Parse(%q) = %+v, but Parse(Marshal) = %+v", b, r, r2)
	}
	if m2 := r2.Marshal(); !bytes.Equal(m, m2) {
		t.Fatalf("Marshal not stable: %q then %q", m, m2)
	}
}
