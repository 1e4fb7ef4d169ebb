package pidfile

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"reflect"
	"strings"
	"testing"
	"time"
)

// crcTable is the test's own CRC-32C table, independent of the package's.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// testRecord returns a record with every field set, Extra keys included and
// a data directory containing a newline, a backslash and a carriage return.
func testRecord(pid int, token string) *Record {
	return &Record{
		PID:        pid,
		DataDir:    "/srv/da\nta\\dir\r",
		StartTime:  time.Date(2025, 3, 4, 5, 6, 7, 890123456, time.FixedZone("CET", 3600)),
		BootID:     "0f5b6b0e-8a2c-4a8e-9d8e-6f3e0c1d2b3a",
		Hostname:   "db-1.example",
		PIDNS:      4026531836,
		PIDStart:   123456789,
		ShmKey:     0x1234abcd,
		ShmID:      98765,
		LockMethod: Flock,
		Status:     Ready,
		Token:      token,
		Version:    Version,
		Extra: map[string]string{
			"child_pid": "4243",
			"heartbeat": "2025-03-04T05:06:08Z",
			"note":      "a=b\\c\nd",
		},
	}
}

// withSum appends a correct crc32c line to body, computed by the test.
func withSum(body []byte) []byte {
	out := append([]byte(nil), body...)
	return fmt.Appendf(out, "crc32c=%08x\n", crc32.Checksum(body, crcTable))
}

// bodyLines returns the lines of a marshalled record before its crc32c line.
func bodyLines(t testing.TB, rec []byte) []string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(rec), "\n"), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "crc32c=") {
		t.Fatalf("record does not end in a crc32c line: %q", last)
	}
	return lines[:len(lines)-1]
}

// edited returns the test record with its body lines passed through fn and a
// correct checksum appended, so that only fn's change can be wrong with it.
func edited(t testing.TB, fn func([]string) []string) []byte {
	t.Helper()
	lines := fn(bodyLines(t, testRecord(4242, "tok-edit").Marshal()))
	return withSum([]byte(strings.Join(lines, "\n") + "\n"))
}

// setKey replaces the value of key in lines.
func setKey(key, value string) func([]string) []string {
	return func(lines []string) []string {
		for i, l := range lines {
			if strings.HasPrefix(l, key+"=") {
				lines[i] = key + "=" + value
				return lines
			}
		}
		panic("no key " + key)
	}
}

// sameRecord reports whether a and b are equal, StartTime compared as an
// instant.
func sameRecord(a, b *Record) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	if !x.StartTime.Equal(y.StartTime) {
		return false
	}
	x.StartTime, y.StartTime = time.Time{}, time.Time{}
	return reflect.DeepEqual(x, y)
}

func TestMarshalFormat(t *testing.T) {
	if got := crc32.Checksum([]byte("123456789"), crcTable); got != 0xe3069283 {
		t.Fatalf("test's CRC-32C of the check string = %08x, want e3069283", got)
	}
	body := `4242
datadir=/srv/da\nta\\dir\r
start_time=2025-03-04T04:06:07.890123456Z
boot_id=0f5b6b0e-8a2c-4a8e-9d8e-6f3e0c1d2b3a
hostname=db-1.example
pid_ns=4026531836
pid_start=123456789
shm_key=0x1234abcd
shm_id=98765
lock_method=flock
status=ready
token=tok-format
version=1
child_pid=4243
heartbeat=2025-03-04T05:06:08Z
note=a=b\\c\nd
`
	want := withSum([]byte(body))
	got := testRecord(4242, "tok-format").Marshal()
	if !bytes.Equal(got, want) {
		t.Fatalf("Marshal:\n%s\nwant:\n%s", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		edit func(r *Record)
	}{
		{"all fields", func(r *Record) {}},
		{"no extra", func(r *Record) { r.Extra = nil }},
		{"no segment", func(r *Record) { r.ShmKey, r.ShmID = -1, -1 }},
		// SysV keys are 32-bit key_t: the shm package stores keys with the
		// top bit set as negative ints.
		{"key with top bit set", func(r *Record) { r.ShmKey = int(int32(-0x70a3d50b)) }},
		{"key 0x7fffffff", func(r *Record) { r.ShmKey = 0x7fffffff }},
		{"highest PID", func(r *Record) { r.PID = 1 << 22 }},
		{"ofd stopping", func(r *Record) { r.LockMethod, r.Status = OFD, Stopping }},
		{"posix starting", func(r *Record) { r.LockMethod, r.Status = POSIX, Starting }},
		{"auto stopped", func(r *Record) { r.LockMethod, r.Status = Auto, Stopped }},
		{"later version", func(r *Record) { r.Version = 7 }},
		{"empty strings", func(r *Record) { r.DataDir, r.BootID, r.Hostname, r.Token = "", "", "", "" }},
		{"awkward strings", func(r *Record) {
			r.DataDir = "\\\\\n\n\r\\n"
			r.Hostname = "h=o=s=t"
			r.Token = "\\"
			r.Extra = map[string]string{"k\\ey": "v\\", "sp ace": "", "x": "\r\n"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := testRecord(4242, "tok-round")
			tt.edit(in)
			b := in.Marshal()
			out, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse(Marshal()) = %v\n%s", err, b)
			}
			if !sameRecord(in, out) {
				t.Fatalf("round trip changed the record:\n in: %+v\nout: %+v", in, out)
			}
			if again := out.Marshal(); !bytes.Equal(again, b) {
				t.Fatalf("Marshal(Parse(b)) != b:\n%s\nvs\n%s", again, b)
			}
		})
	}
}

func TestMarshalDropsKeysItCannotKeep(t *testing.T) {
	r := testRecord(4242, "tok-drop")
	r.Extra = map[string]string{
		"kept":     "yes",
		"":         "empty key",
		"a=b":      "equals sign",
		"a\nb":     "newline",
		"a\rb":     "carriage return",
		"crc32c":   "checksum",
		"hostname": "required key",
	}
	b := r.Marshal()
	for _, v := range []string{"empty key", "equals sign", "newline", "carriage return", "checksum", "required key"} {
		if bytes.Contains(b, []byte(v)) {
			t.Errorf("Marshal wrote the Extra entry with value %q:\n%s", v, b)
		}
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, b)
	}
	if want := map[string]string{"kept": "yes"}; !reflect.DeepEqual(got.Extra, want) {
		t.Fatalf("Extra = %q, want %q", got.Extra, want)
	}
	if got.Hostname != "db-1.example" {
		t.Fatalf("Hostname = %q: an Extra entry overrode it", got.Hostname)
	}
}

func TestParseKeepsUnknownKeys(t *testing.T) {
	b := edited(t, func(l []string) []string {
		return append(l, "worker_pid=77", "future_key=x=y", `escaped=a\nb`)
	})
	r, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, b)
	}
	want := map[string]string{
		"child_pid": "4243", "worker_pid": "77", "heartbeat": "2025-03-04T05:06:08Z", "note": "a=b\\c\nd",
		"future_key": "x=y", "escaped": "a\nb",
	}
	if !reflect.DeepEqual(r.Extra, want) {
		t.Fatalf("Extra = %q, want %q", r.Extra, want)
	}
	if r.PID != 4242 || r.Token != "tok-edit" || r.Status != Ready {
		t.Fatalf("known fields wrong: %+v", r)
	}
}

func TestParseRejects(t *testing.T) {
	valid := testRecord(4242, "tok-edit").Marshal()
	sumPrefix := valid[:bytes.LastIndex(valid, []byte("crc32c="))+len("crc32c=")]
	crlf := bytes.ReplaceAll(valid, []byte("\n"), []byte("\r\n"))
	crlfBody := strings.Join(bodyLines(t, valid), "\r\n") + "\r\n"
	big := testRecord(4242, "tok-big")
	big.Extra = map[string]string{"pad": strings.Repeat("x", MaxSize)}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"nil", nil, "empty"},
		{"empty", []byte{}, "empty"},
		{"garbage text", []byte("hello, world\n"), "no crc32c line"},
		{"garbage without newline", []byte("hello, world"), "no crc32c line"},
		{"binary", []byte{0x00, 0xff, 0xfe, 0x01, 0x80, 0x7f}, "no crc32c line"},
		{"binary line", []byte{0x00, 0xff, 0xfe, 0x01, '\n'}, "no crc32c line"},
		{"binary with its checksum", withSum([]byte{0x00, 0xff, 0x01, '\n'}), `line 1 is "\x00\xff\x01", want a PID`},
		{"only a checksum line", withSum(nil), "no crc32c line"},
		{"oversized", bytes.Repeat([]byte("1\n"), MaxSize/2+1), fmt.Sprintf("larger than %d bytes", MaxSize)},
		{"oversized record", big.Marshal(), fmt.Sprintf("larger than %d bytes", MaxSize)},
		{"CRLF", crlf, `bad checksum "`},
		{"CRLF body with checksum", withSum([]byte(crlfBody)), `line 1 is "4242\r", want a PID`},
		{"CR in a value", edited(t, setKey("hostname", "a\rb")), "carriage return in value"},
		{"CR in a value with escapes", edited(t, setKey("hostname", `a\n`+"\r")), "carriage return in value"},
		{"short checksum", append(bytes.Clone(sumPrefix), "1234567\n"...), `bad checksum "1234567"`},
		{"checksum not hex", append(bytes.Clone(sumPrefix), "1234567g\n"...), `bad checksum "1234567g"`},
		{"duplicate key", edited(t, func(l []string) []string { return append(l, "hostname=other") }), `key "hostname" appears twice`},
		{"duplicate extra key", edited(t, func(l []string) []string { return append(l, "child_pid=1") }), `key "child_pid" appears twice`},
		{"missing PID line", edited(t, func(l []string) []string { return l[1:] }), `line 1 is "datadir=/srv/da\\nta\\\\dir\\r", want a PID`},
		{"PID 0", edited(t, func(l []string) []string { l[0] = "0"; return l }), `line 1 is "0", want a PID`},
		{"negative PID", edited(t, func(l []string) []string { l[0] = "-42"; return l }), `line 1 is "-42", want a PID`},
		{"huge PID", edited(t, func(l []string) []string { l[0] = "99999999999"; return l }), `line 1 is "99999999999", want a PID`},
		{"PID above PID_MAX_LIMIT", edited(t, func(l []string) []string { l[0] = "4194305"; return l }), `line 1 is "4194305", want a PID`},
		{"non-numeric PID", edited(t, func(l []string) []string { l[0] = "forty-two"; return l }), `line 1 is "forty-two", want a PID`},
		{"PID with space", edited(t, func(l []string) []string { l[0] = " 42"; return l }), `line 1 is " 42", want a PID`},
		{"line without equals", edited(t, func(l []string) []string { l[2] = "garbage"; return l }), "line 3 is not key=value"},
		{"empty key", edited(t, func(l []string) []string { l[2] = "=v"; return l }), "line 3 is not key=value"},
		{"empty line", edited(t, func(l []string) []string { return append(l, "") }), "line 17 is not key=value"},
		{"unknown escape", edited(t, setKey("hostname", `a\qb`)), `unknown escape \q`},
		{"lone backslash", edited(t, setKey("hostname", `ab\`)), "value ends in a lone backslash"},
		{"unknown status", edited(t, setKey("status", "bogus")), `unknown status "bogus"`},
		{"unknown lock method", edited(t, setKey("lock_method", "fcntl")), `unknown lock method "fcntl"`},
		{"version 0", edited(t, setKey("version", "0")), "version: want a number from 1 up"},
		{"bad start time", edited(t, setKey("start_time", "yesterday")), "start_time: "},
		{"bad pid_ns", edited(t, setKey("pid_ns", "-1")), "pid_ns: "},
		{"bad pid_start", edited(t, setKey("pid_start", "x")), "pid_start: "},
		{"decimal shm_key", edited(t, setKey("shm_key", "12345")), `want 0x and 8 hex digits, got "12345"`},
		{"shm_id below -1", edited(t, setKey("shm_id", "-2")), "shm_id: not an id"},
		{"shm_id above int32", edited(t, setKey("shm_id", "2147483648")), "shm_id: not an id"},
		// Parse must only accept what Marshal can write back: otherwise a
		// holder that rewrites the record it read loses or breaks it.
		// The first checksum line ends the record: one in the body ends it
		// early, and its checksum does not match.
		{"checksum key in the body", edited(t, func(l []string) []string { return append(l, "crc32c=00000000") }), "checksum mismatch"},
		{"CR in a key", edited(t, func(l []string) []string { return append(l, "ke\ry=v") }), `bad key "ke\ry"`},
		{"year before 0 in UTC", edited(t, setKey("start_time", "0000-01-01T00:00:00+00:01")), "start_time: year -1 out of range"},
		{"year after 9999 in UTC", edited(t, setKey("start_time", "9999-12-31T23:59:59-00:01")), "start_time: year 10000 out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Parse(tt.in)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q) = %+v, %v; want an error wrapping ErrMalformed", tt.in, r, err)
			}
			if r != nil {
				t.Fatalf("Parse returned a record with its error: %+v", r)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestParseRejectsMissingRequiredKey(t *testing.T) {
	for _, key := range required {
		t.Run(key, func(t *testing.T) {
			b := edited(t, func(l []string) []string {
				out := l[:0]
				for _, line := range l {
					if !strings.HasPrefix(line, key+"=") {
						out = append(out, line)
					}
				}
				return out
			})
			if bytes.Contains(b, []byte("\n"+key+"=")) {
				t.Fatalf("test bug: %s still present", key)
			}
			_, err := Parse(b)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse without %s = %v, want ErrMalformed", key, err)
			}
			if want := "no " + key; !strings.HasSuffix(err.Error(), want) {
				t.Fatalf("Parse without %s: %q, want it to end in %q", key, err, want)
			}
		})
	}
}

func TestParseRejectsEveryProperPrefix(t *testing.T) {
	b := testRecord(4242, "tok-prefix").Marshal()
	if _, err := Parse(b); err != nil {
		t.Fatalf("whole record: %v", err)
	}
	for i := range len(b) {
		_, err := Parse(b[:i])
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("Parse of the first %d of %d bytes = %v, want ErrMalformed", i, len(b), err)
		}
		sumAt := bytes.Index(b, []byte("\ncrc32c="))
		var want string
		switch {
		case i == 0:
			want = "empty"
		case i < sumAt+len("\ncrc32c="):
			want = "no crc32c line"
		default:
			want = "no newline after the crc32c line"
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("Parse of the first %d bytes: %q, want %q", i, err, want)
		}
	}
}

// TestParseIgnoresTail: a writer that dies between its write and its
// truncate leaves the new record followed by the tail of the old, longer one.
// The new record is whole and must be read as such.
func TestParseIgnoresTail(t *testing.T) {
	long := testRecord(4242, "tok-long")
	long.Extra = map[string]string{"pad": strings.Repeat("x", 500)}
	short := testRecord(4243, "tok-short")
	lb, sb := long.Marshal(), short.Marshal()
	b := append(append([]byte(nil), sb...), lb[len(sb):]...)
	r, err := Parse(b)
	if _, leaked := r.Extra["pad"]; err != nil || r.PID != 4243 || r.Token != "tok-short" || leaked {
		t.Fatalf("Parse(new record + old tail) = %+v, %v; want the new record", r, err)
	}
}

func TestParseRejectsEveryBitFlip(t *testing.T) {
	b := testRecord(4242, "tok-flip").Marshal()
	sumAt := bytes.LastIndex(b, []byte("crc32c="))
	for i := range len(b) {
		for bit := range 8 {
			c := append([]byte(nil), b...)
			c[i] ^= 1 << bit
			_, err := Parse(c)
			if i >= sumAt+len("crc32c=") && bytes.EqualFold(c, b) {
				// Upper-case hex digits in the checksum: the same sum.
				if err != nil {
					t.Fatalf("checksum %q with a digit in upper case: %v", c[sumAt:], err)
				}
				continue
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("byte %d bit %d flipped (%q -> %q): Parse = %v, want ErrMalformed", i, bit, b[i], c[i], err)
			}
			if i < sumAt-1 && !strings.Contains(err.Error(), "checksum mismatch (torn or edited record)") {
				t.Fatalf("byte %d bit %d flipped in the body: %q, want a checksum mismatch", i, bit, err)
			}
		}
	}
}

// The record's own CRC-32C table gives the checksum of the standard one.
func TestCastagnoliTable(t *testing.T) {
	std := crc32.MakeTable(crc32.Castagnoli)
	for _, b := range [][]byte{nil, []byte("a"), []byte("123456789"), make([]byte, 5000)} {
		if got, want := crc32.Checksum(b, castagnoli), crc32.Checksum(b, std); got != want {
			t.Errorf("crc32c of %d bytes: %08x, want %08x", len(b), got, want)
		}
	}
	if got := crc32.Checksum([]byte("123456789"), castagnoli); got != 0xe3069283 {
		t.Errorf("crc32c check value %08x, want e3069283", got)
	}
}
