package supervise

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzMainPID feeds --main-pid-file contents through the file as dirlockd
// reads it: a PID comes only from a first line of digits naming a PID the
// kernel can hand out, only the first line counts, and nothing past
// maxMainPIDFile+1 bytes is read.
func FuzzMainPID(f *testing.F) {
	for _, s := range []string{"1234\n", " 42 \n", "42", "0\n", "-1\n", "+5\n", "4194304\n", "4194305\n",
		"99999999999999999999\n", "12\n34\n", "\n12\n", "12abc\n", "1_000\n", "0x10\n", "١٢\n", "\x00\n",
		strings.Repeat("7", maxMainPIDFile+10), strings.Repeat(" ", maxMainPIDFile) + "5\n"} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "main.PID")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		pid, err := readMainPID(path)
		head := data[:min(len(data), maxMainPIDFile+1)]
		if p, e := parseMainPID(head); p != pid || e != err {
			t.Fatalf("%q: read from the file %d, %v; parsed %d, %v", data, pid, err, p, e)
		}
		line, _, found := bytes.Cut(head, []byte("\n"))
		if found {
			if p, e := parseMainPID(append(line, '\n')); p != pid || (e == nil) != (err == nil) {
				t.Fatalf("%q: %d, %v; its first line alone %d, %v", data, pid, err, p, e)
			}
		}
		if err != nil {
			if pid != 0 {
				t.Fatalf("%q: PID %d with error %v", data, pid, err)
			}
			return
		}
		if !found && len(data) > maxMainPIDFile {
			t.Fatalf("%q: PID %d from a first line longer than %d bytes", data, pid, maxMainPIDFile)
		}
		if pid < 1 || pid > pidMaxLimit {
			t.Fatalf("%q: PID %d out of range", data, pid)
		}
		if got := strings.TrimLeft(strings.TrimSpace(string(line)), "0"); got != strconv.Itoa(pid) {
			t.Fatalf("%q: PID %d from first line %q", data, pid, line)
		}
	})
}

// TestMainPIDFileRefused: what is not a regular file is refused without
// being read, a symlink among root's own files is followed.
func TestMainPIDFileRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, []byte("77\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("./sub/../good", link); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path, want string
		pid        int
	}{
		{fifo, "not a regular file (a FIFO)", 0},
		{"/dev/zero", "not a regular file (a character device)", 0},
		{dir, "not a regular file (a directory)", 0},
		{loop, "too many levels of symbolic links", 0},
		{filepath.Join(dir, "missing"), "no such file", 0},
		{good, "", 77},
		{link, "", 77},
	} {
		pid, err := readMainPID(c.path)
		if pid != c.pid || c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %d, %v; want %d, %q", c.path, pid, err, c.pid, c.want)
		}
	}
}
