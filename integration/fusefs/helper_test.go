package fusefs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m, map[string]testutil.Helper{"fusefs-client": clientMain})
}

// clientMain is a process that works on files as a test tells it, one
// command a line on stdin, one reply a line on stdout: "ok [result]" or
// "err ENAME". The locks it takes are its own (POSIX locks belong to the
// process), and the tests can SIGKILL it. Commands:
//
//	open NAME PATH FLAGS        flags: rdonly|wronly|rdwr[,creat][,append][,trunc]
//	close NAME
//	flock NAME ex|sh|un [nb]
//	lk NAME CMD r|w|u START LEN CMD: setlk setlkw getlk ofdsetlk ofdsetlkw ofdgetlk;
//	                            getlk replies "ok r|w|u START LEN PID"
//	pwrite NAME OFF DATA
//	write NAME DATA
//	pread NAME OFF N            replies "ok QUOTED"
//	fsync NAME
//	size NAME                   fstat; replies "ok SIZE"
func clientMain([]string) int {
	files := make(map[string]*os.File)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		res, err := clientDo(files, f)
		switch {
		case err == nil:
			fmt.Println(strings.TrimSpace("ok " + res))
		case errors.As(err, new(syscall.Errno)):
			var errno syscall.Errno
			errors.As(err, &errno)
			fmt.Println("err", unix.ErrnoName(errno))
		default:
			fmt.Println("bad", err)
		}
	}
	// The files stay reachable until here: a finalizer closing one would
	// drop its locks behind the test's back.
	for _, f := range files {
		f.Close()
	}
	return 0
}

func clientDo(files map[string]*os.File, f []string) (string, error) {
	need := map[string]int{"open": 4, "close": 2, "flock": 3, "lk": 6, "pwrite": 4, "write": 3, "pread": 4, "fsync": 2, "size": 2}
	n, ok := need[f[0]]
	if !ok {
		return "", fmt.Errorf("unknown command %q", f[0])
	}
	if len(f) < n {
		return "", fmt.Errorf("%s: want %d fields", f[0], n)
	}
	if f[0] == "open" {
		flags := syscall.O_CLOEXEC
		for _, fl := range strings.Split(f[3], ",") {
			flags |= map[string]int{"rdonly": os.O_RDONLY, "wronly": os.O_WRONLY, "rdwr": os.O_RDWR,
				"creat": os.O_CREATE, "append": os.O_APPEND, "trunc": os.O_TRUNC}[fl]
		}
		// syscall.Open, not os.OpenFile: the error must be the bare errno.
		fd, err := syscall.Open(f[2], flags, 0o644)
		if err != nil {
			return "", err
		}
		files[f[1]] = os.NewFile(uintptr(fd), f[2])
		return strconv.Itoa(fd), nil
	}
	file := files[f[1]]
	if file == nil {
		return "", fmt.Errorf("no file %q", f[1])
	}
	fd := int(file.Fd())
	num := func(s string) int64 {
		v, _ := strconv.ParseInt(s, 10, 64)
		return v
	}
	switch f[0] {
	case "close":
		delete(files, f[1])
		return "", syscall.Close(int(file.Fd()))
	case "flock":
		how := map[string]int{"ex": unix.LOCK_EX, "sh": unix.LOCK_SH, "un": unix.LOCK_UN}[f[2]]
		if len(f) > 3 && f[3] == "nb" {
			how |= unix.LOCK_NB
		}
		return "", eintr.Retry(func() error { return unix.Flock(fd, how) })
	case "lk":
		cmd := map[string]int{"setlk": unix.F_SETLK, "setlkw": unix.F_SETLKW, "getlk": unix.F_GETLK,
			"ofdsetlk": unix.F_OFD_SETLK, "ofdsetlkw": unix.F_OFD_SETLKW, "ofdgetlk": unix.F_OFD_GETLK}[f[2]]
		typ := map[string]int16{"r": unix.F_RDLCK, "w": unix.F_WRLCK, "u": unix.F_UNLCK}[f[3]]
		lk := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: num(f[4]), Len: num(f[5])}
		if err := eintr.Retry(func() error { return unix.FcntlFlock(uintptr(fd), cmd, &lk) }); err != nil {
			return "", err
		}
		if cmd == unix.F_GETLK || cmd == unix.F_OFD_GETLK {
			t := map[int16]string{unix.F_RDLCK: "r", unix.F_WRLCK: "w", unix.F_UNLCK: "u"}[lk.Type]
			return fmt.Sprintf("%s %d %d %d", t, lk.Start, lk.Len, lk.Pid), nil
		}
		return "", nil
	case "pwrite":
		_, err := unix.Pwrite(fd, []byte(f[3]), num(f[2]))
		return "", err
	case "write":
		_, err := unix.Write(fd, []byte(f[2]))
		return "", err
	case "pread":
		b := make([]byte, num(f[3]))
		n, err := unix.Pread(fd, b, num(f[2]))
		if err != nil {
			return "", err
		}
		return strconv.Quote(string(b[:n])), nil
	case "fsync":
		return "", unix.Fsync(fd)
	case "size":
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return "", err
		}
		return strconv.FormatInt(st.Size, 10), nil
	}
	panic("unreachable")
}

// client is a running clientMain process: a process on one "host".
type client struct {
	*testutil.Proc
	t    testing.TB
	name string
	pid  int
}

// startClient starts a client process, killed (by its PID) and reaped when
// the test ends.
func startClient(t testing.TB, name string) *client {
	t.Helper()
	p := testutil.Start(t, testutil.Command("fusefs-client"))
	return &client{Proc: p, t: t, name: name, pid: p.PID()}
}

// kill SIGKILLs the client and reaps it; idempotent.
func (c *client) kill() { c.Kill() }

// send sends a command without waiting for its reply.
func (c *client) send(format string, args ...any) {
	c.t.Helper()
	c.Send(c.t, fmt.Sprintf(format, args...))
}

// reply waits up to timeout for the next reply.
func (c *client) reply(timeout time.Duration) (string, bool) {
	l, err := c.ReadLine(timeout)
	return l, err == nil
}

// wait returns the reply to a command sent before, failing the test if there
// is none within 10 s.
func (c *client) wait(what string) string {
	c.t.Helper()
	l, ok := c.reply(10 * time.Second)
	if !ok {
		c.t.Fatalf("%s: %s: no reply within 10s", c.name, what)
	}
	return l
}

// do runs a command and returns its reply.
func (c *client) do(format string, args ...any) string {
	c.t.Helper()
	c.send(format, args...)
	return c.wait(fmt.Sprintf(format, args...))
}

// ok runs a command that must succeed and returns its result.
func (c *client) ok(format string, args ...any) string {
	c.t.Helper()
	r := c.do(format, args...)
	res, found := strings.CutPrefix(r, "ok")
	if !found {
		c.t.Fatalf("%s: %s: %s, want ok", c.name, fmt.Sprintf(format, args...), r)
	}
	return strings.TrimSpace(res)
}

// fails runs a command that must fail with errno.
func (c *client) fails(errno syscall.Errno, format string, args ...any) {
	c.t.Helper()
	if r, want := c.do(format, args...), "err "+unix.ErrnoName(errno); r != want {
		c.t.Fatalf("%s: %s: %s, want %s", c.name, fmt.Sprintf(format, args...), r, want)
	}
}

// quiet checks that the command sent last has not finished within d.
func (c *client) quiet(d time.Duration, what string) {
	c.t.Helper()
	if l, ok := c.reply(d); ok {
		c.t.Fatalf("%s: %s returned %q, want it to block", c.name, what, l)
	}
}

// mountFS mounts a fresh backing directory at n mountpoints, all under
// t.TempDir, and unmounts them when the test ends (after the clients the
// test starts later are killed: cleanups run last-in first-out).
func mountFS(t testing.TB, mode Mode, n int) (*FS, []string) {
	t.Helper()
	dir := t.TempDir()
	backing := filepath.Join(dir, "backing")
	dirs := []string{backing}
	for i := range n {
		dirs = append(dirs, filepath.Join(dir, fmt.Sprintf("host%d", i)))
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := Mount(backing, mode, dirs[1:]...)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := fs.Close(); err != nil {
			t.Error(err)
		}
	})
	return fs, dirs[1:]
}
