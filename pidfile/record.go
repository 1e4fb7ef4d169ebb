package pidfile

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Version is the record layout this package writes. Readers accept any
// version from 1 up and ignore keys they do not know.
const Version = 1

// MaxSize bounds what a reader will take from a pidfile. A record is a few
// hundred bytes; anything larger is not one of ours.
const MaxSize = 64 << 10

// ErrMalformed is wrapped by every error that says a pidfile's content is not
// a complete, intact record.
var ErrMalformed = errors.New("malformed pidfile record")

// Status is the life-cycle phase a holder reports in its record.
type Status string

// The phases, in the order a holder goes through them.
const (
	Starting Status = "starting"
	Ready    Status = "ready"
	Stopping Status = "stopping"
	Stopped  Status = "stopped"
)

func (s Status) valid() bool {
	switch s {
	case Starting, Ready, Stopping, Stopped:
		return true
	}
	return false
}

// Record is the content of a pidfile. Line 1 is the PID alone, so that
// kill $(head -1 FILE), systemd's PIDFile= and start-stop-daemon can read it;
// every further line is key=value; the record ends with a CRC-32C of
// everything before it, so a reader never takes a torn or half-written record
// for a valid one. See docs/format.md.
type Record struct {
	PID        int       // holder's PID, in its own PID namespace
	DataDir    string    // absolute path of the data directory
	StartTime  time.Time // when the holder acquired the data directory
	BootID     string    // kernel boot ID at acquisition
	Hostname   string
	PIDNS      uint64 // inode of the holder's PID namespace
	PIDStart   uint64 // holder's start time in clock ticks since boot
	ShmKey     int    // SysV key of the holder's segment as an int32; 0 (IPC_PRIVATE) if none
	ShmID      int    // SysV id of the holder's segment, -1 if none
	LockMethod Method
	Status     Status
	Token      string // unique per acquisition
	Version    int

	// Extra holds keys this version does not interpret; they are kept
	// when the record is rewritten. Later layers (the dirlockd command)
	// store child_pid, heartbeat and the like here.
	Extra map[string]string
}

// The record's keys, in the order they are written.
const (
	keyDataDir    = "datadir"
	keyStartTime  = "start_time"
	keyBootID     = "boot_id"
	keyHostname   = "hostname"
	keyPIDNS      = "pid_ns"
	keyPIDStart   = "pid_start"
	keyShmKey     = "shm_key"
	keyShmID      = "shm_id"
	keyLockMethod = "lock_method"
	keyStatus     = "status"
	keyToken      = "token"
	keyVersion    = "version"
	keyChecksum   = "crc32c"
)

var required = []string{
	keyDataDir, keyStartTime, keyBootID, keyHostname, keyPIDNS, keyPIDStart,
	keyShmKey, keyShmID, keyLockMethod, keyStatus, keyToken, keyVersion,
}

// castagnoli is the CRC-32C table, made here rather than by
// crc32.MakeTable(crc32.Castagnoli): that one also prepares the SSE 4.2
// tables for long inputs, about 0.15 ms of every dirlockd start, where a
// record of a few hundred bytes checksums in a microsecond byte by byte.
// The checksum is the same.
var castagnoli = func() *crc32.Table {
	var t crc32.Table
	for i := range t {
		c := uint32(i)
		for range 8 {
			if c&1 == 1 {
				c = c>>1 ^ crc32.Castagnoli
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return &t
}()

// Marshal encodes r in the pidfile format.
func (r *Record) Marshal() []byte {
	// Appended in place into one buffer that fits a record: Marshal runs
	// at every acquisition and release.
	b := bytes.NewBuffer(make([]byte, 0, 1024))
	b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(r.PID), 10))
	b.WriteByte('\n')
	kv := func(k, v string) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(escape(v))
		b.WriteByte('\n')
	}
	kv(keyDataDir, r.DataDir)
	kv(keyStartTime, r.StartTime.UTC().Format(time.RFC3339Nano))
	kv(keyBootID, r.BootID)
	kv(keyHostname, r.Hostname)
	kv(keyPIDNS, strconv.FormatUint(r.PIDNS, 10))
	kv(keyPIDStart, strconv.FormatUint(r.PIDStart, 10))
	kv(keyShmKey, FormatKey(r.ShmKey))
	kv(keyShmID, strconv.Itoa(r.ShmID))
	kv(keyLockMethod, r.LockMethod.String())
	kv(keyStatus, string(r.Status))
	kv(keyToken, r.Token)
	kv(keyVersion, strconv.Itoa(r.Version))
	for _, k := range slices.Sorted(maps.Keys(r.Extra)) {
		if validExtraKey(k) {
			kv(k, r.Extra[k])
		}
	}
	sum := crc32.Checksum(b.Bytes(), castagnoli)
	b.WriteString(keyChecksum)
	b.WriteByte('=')
	b.Write(appendHex32(b.AvailableBuffer(), sum))
	b.WriteByte('\n')
	return b.Bytes()
}

// appendHex32 appends v as eight lower-case hex digits (%08x).
func appendHex32(dst []byte, v uint32) []byte {
	const digits = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		dst = append(dst, digits[v>>uint(shift)&0xf])
	}
	return dst
}

// FormatKey writes a SysV key as the record and ipcs(1) show it (0x and
// eight hex digits), so the two can be compared by eye. Keys are int32 in
// the kernel: half of them are negative as ints.
func FormatKey(k int) string {
	return string(appendHex32([]byte("0x"), uint32(k)))
}

func validExtraKey(k string) bool {
	if k == "" || slices.Contains(required, k) || k == keyChecksum {
		return false
	}
	return !strings.ContainsAny(k, "=\n\r")
}

// Parse decodes a pidfile record. It fails, wrapping ErrMalformed, unless the
// content starts with one complete record whose checksum matches; bytes after
// the checksum line are ignored (see the comment inside).
func Parse(b []byte) (*Record, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxSize)
	}
	// The record ends at its checksum line. Whatever follows is the tail of
	// an earlier, longer record that the writer has not truncated yet, or
	// never will (it died between its write and its truncate): not part of
	// the record. A torn record fails its checksum instead.
	i := bytes.Index(b, []byte("\n"+keyChecksum+"="))
	if i < 0 {
		return nil, fmt.Errorf("%w: no %s line (truncated, or not written by dirlockd)", ErrMalformed, keyChecksum)
	}
	end := bytes.IndexByte(b[i+1:], '\n')
	if end < 0 {
		return nil, fmt.Errorf("%w: truncated (no newline after the %s line)", ErrMalformed, keyChecksum)
	}
	body, sumLine := b[:i+1], b[i+1:i+1+end]
	sum, _ := strings.CutPrefix(string(sumLine), keyChecksum+"=")
	want, err := strconv.ParseUint(sum, 16, 32)
	if err != nil || len(sum) != 8 {
		return nil, fmt.Errorf("%w: bad checksum %q", ErrMalformed, sum)
	}
	if got := crc32.Checksum(body, castagnoli); uint32(want) != got {
		return nil, fmt.Errorf("%w: checksum mismatch (torn or edited record)", ErrMalformed)
	}

	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	r := &Record{}
	r.PID, err = strconv.Atoi(lines[0])
	if err != nil || r.PID <= 0 || r.PID > 1<<22 {
		return nil, fmt.Errorf("%w: line 1 is %q, want a PID", ErrMalformed, lines[0])
	}
	fields := make(map[string]string, len(lines))
	for i, line := range lines[1:] {
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: line %d is not key=value", ErrMalformed, i+2)
		}
		if _, dup := fields[k]; dup {
			return nil, fmt.Errorf("%w: key %q appears twice", ErrMalformed, k)
		}
		if v, err = unescape(v); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrMalformed, i+2, err)
		}
		fields[k] = v
	}
	for _, k := range required {
		if _, ok := fields[k]; !ok {
			return nil, fmt.Errorf("%w: no %s", ErrMalformed, k)
		}
	}
	if err := r.decode(fields); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return r, nil
}

func (r *Record) decode(f map[string]string) error {
	var err error
	take := func(k string) string { v := f[k]; delete(f, k); return v }
	r.DataDir = take(keyDataDir)
	if r.StartTime, err = time.Parse(time.RFC3339Nano, take(keyStartTime)); err != nil {
		return fmt.Errorf("%s: %v", keyStartTime, err)
	}
	if y := r.StartTime.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Errorf("%s: year %d out of range", keyStartTime, y) // Marshal could not write it back
	}
	r.BootID = take(keyBootID)
	r.Hostname = take(keyHostname)
	if r.PIDNS, err = strconv.ParseUint(take(keyPIDNS), 10, 64); err != nil {
		return fmt.Errorf("%s: %v", keyPIDNS, err)
	}
	if r.PIDStart, err = strconv.ParseUint(take(keyPIDStart), 10, 64); err != nil {
		return fmt.Errorf("%s: %v", keyPIDStart, err)
	}
	if r.ShmKey, err = parseKey(take(keyShmKey)); err != nil {
		return fmt.Errorf("%s: %v", keyShmKey, err)
	}
	if r.ShmID, err = strconv.Atoi(take(keyShmID)); err != nil || r.ShmID < -1 || r.ShmID > 1<<31-1 {
		return fmt.Errorf("%s: not an id", keyShmID)
	}
	if r.LockMethod, err = ParseMethod(take(keyLockMethod)); err != nil {
		return err
	}
	if r.Status = Status(take(keyStatus)); !r.Status.valid() {
		return fmt.Errorf("%s: unknown status %q", keyStatus, r.Status)
	}
	r.Token = take(keyToken)
	if r.Version, err = strconv.Atoi(take(keyVersion)); err != nil || r.Version < 1 {
		return fmt.Errorf("%s: want a number from 1 up", keyVersion)
	}
	for k := range f {
		if !validExtraKey(k) {
			return fmt.Errorf("bad key %q", k) // Marshal would drop it
		}
	}
	if len(f) > 0 {
		r.Extra = f
	}
	return nil
}

func parseKey(s string) (int, error) {
	h, ok := strings.CutPrefix(s, "0x")
	if !ok || len(h) != 8 {
		return 0, fmt.Errorf("want 0x and 8 hex digits, got %q", s)
	}
	v, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		return 0, err
	}
	return int(int32(uint32(v))), nil
}

// escape keeps a value on one line: a path or hostname may contain anything
// but NUL.
func escape(v string) string {
	if !strings.ContainsAny(v, "\\\n\r") {
		return v
	}
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`).Replace(v)
}

func unescape(v string) (string, error) {
	if !strings.Contains(v, `\`) {
		if strings.ContainsRune(v, '\r') {
			return "", errors.New("carriage return in value")
		}
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' {
			return "", errors.New("carriage return in value")
		}
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i++; i == len(v) {
			return "", errors.New("value ends in a lone backslash")
		}
		switch v[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		default:
			return "", fmt.Errorf("unknown escape \\%c", v[i])
		}
	}
	return b.String(), nil
}
