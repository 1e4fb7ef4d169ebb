package notify

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv makes the test binary act as a notifying child process.
const childEnv = "DIRLOCKD_NOTIFY_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := Send(os.Getenv("NOTIFY_SOCKET"), Field{"READY", "1"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func listen(t *testing.T) *Listener {
	t.Helper()
	l, err := Listen(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func receive(t *testing.T, l *Listener) Message {
	t.Helper()
	select {
	case m, ok := <-l.Messages():
		if !ok {
			t.Fatal("Messages closed")
		}
		return m
	case <-time.After(time.Second):
		t.Fatal("no message within 1s")
	}
	panic("unreachable")
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Field
	}{
		{"", nil},
		{"\n\n", nil},
		{"READY", nil},
		{"=1\n", nil},
		{"READY=1", []Field{{"READY", "1"}}},
		{"READY=1\nSTATUS=Ready to accept connections\n", []Field{{"READY", "1"}, {"STATUS", "Ready to accept connections"}}},
		{"junk\n\nA=\nB=x=y\n", []Field{{"A", ""}, {"B", "x=y"}}},
		// '\r' separates lines as it does for systemd.
		{"READY=1\r\nSTATUS=a b\r\n", []Field{{"READY", "1"}, {"STATUS", "a b"}}},
		{"A=1\rB=2", []Field{{"A", "1"}, {"B", "2"}}},
		{"STATUS=a\nSTATUS=b\n", []Field{{"STATUS", "a"}, {"STATUS", "b"}}},
	} {
		if got := Parse([]byte(tc.in)); !slices.Equal(got, tc.want) {
			t.Errorf("Parse(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMessageAccessors(t *testing.T) {
	m := Message{Fields: Parse([]byte("STATUS=a\nREADY=0\nSTATUS=b\nREADY=1\nSTOPPING=1\n"))}
	if v, ok := m.Get("STATUS"); !ok || v != "b" {
		t.Errorf("Get(STATUS) = %q, %v; want last value b", v, ok)
	}
	if v, ok := m.Get("MISSING"); ok || v != "" {
		t.Errorf("Get(MISSING) = %q, %v", v, ok)
	}
	if !m.Ready() || !m.Stopping() || m.Reloading() {
		t.Errorf("Ready/Stopping/Reloading = %v/%v/%v, want true/true/false", m.Ready(), m.Stopping(), m.Reloading())
	}
	if (Message{Fields: []Field{{"READY", "1"}, {"READY", "0"}}}).Ready() {
		t.Error("Ready uses an earlier value than the last")
	}
	if !(Message{Fields: Parse([]byte("RELOADING=1\r\n"))}).Reloading() {
		t.Error("RELOADING=1 with CRLF not seen")
	}
}

func TestRoundTrip(t *testing.T) {
	l := listen(t)
	if !filepath.IsAbs(l.Path()) || filepath.Base(l.Path()) != "notify.sock" {
		t.Errorf("Path = %q", l.Path())
	}
	if err := Send(l.Path(), Field{"READY", "1"}, Field{"STATUS", "Ready to accept connections"}); err != nil {
		t.Fatal(err)
	}
	m := receive(t, l)
	want := []Field{{"READY", "1"}, {"STATUS", "Ready to accept connections"}}
	if !slices.Equal(m.Fields, want) || !m.Ready() {
		t.Errorf("received %q, want %q", m.Fields, want)
	}
	if m.PID != os.Getpid() {
		t.Errorf("PID = %d, want %d", m.PID, os.Getpid())
	}
}

func TestChildProcess(t *testing.T) {
	l := listen(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "NOTIFY_SOCKET="+l.Path(),
		// A -race binary otherwise sleeps a second on a clean exit.
		"GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	m := receive(t, l)
	if !m.Ready() || m.PID != cmd.Process.Pid || m.PID == os.Getpid() {
		t.Errorf("got %+v, want READY=1 from child PID %d", m, cmd.Process.Pid)
	}
}

func TestForward(t *testing.T) {
	up := listen(t)
	child := Message{PID: 1234, Fields: []Field{{"MAINPID", "999"}, {"READY", "1"}, {"STATUS", "up"}, {"MAINPID", "998"}}}
	if err := Forward(up.Path(), child, 4242); err != nil {
		t.Fatal(err)
	}
	m := receive(t, up)
	want := []Field{{"READY", "1"}, {"STATUS", "up"}, {"MAINPID", "4242"}}
	if !slices.Equal(m.Fields, want) {
		t.Errorf("upstream got %q, want %q", m.Fields, want)
	}
	if m.PID != os.Getpid() {
		t.Errorf("upstream sender PID = %d, want %d", m.PID, os.Getpid())
	}
	if err := Forward("", child, 4242); err != nil {
		t.Errorf("Forward to no upstream: %v", err)
	}
}

func TestSendAbstract(t *testing.T) {
	name := fmt.Sprintf("@dirlockd-test-%d", os.Getpid())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := Send(name, Field{"READY", "1"}, Field{"STATUS", "x y"}); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 100)
	n, _, err := c.ReadFromUnix(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "READY=1\nSTATUS=x y\n" {
		t.Errorf("abstract socket got %q", got)
	}
}

func TestClose(t *testing.T) {
	l, err := Listen(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	// One message more than the channel holds, none received: once the
	// reader has taken the last one off the socket it is stuck handing it
	// over, and Close must release it rather than wait for a consumer.
	for i := range queueLen + 1 {
		if err := Send(l.Path(), Field{"N", fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(time.Second); len(l.Messages()) < queueLen || pending(t, l) > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("reader did not fill the channel: %d queued", len(l.Messages()))
		}
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error)
	go func() { closed <- l.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close hangs with an unread message")
	}
	if _, err := os.Lstat(l.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
	// Close waits for the reader, so the channel is closed by now: queued
	// messages drain in order, then the channel ends.
	n := 0
drain:
	for {
		select {
		case m, ok := <-l.Messages():
			if !ok {
				break drain
			}
			if v, _ := m.Get("N"); v != fmt.Sprint(n) {
				t.Errorf("message %d: N=%q", n, v)
			}
			n++
		default:
			t.Fatal("Messages not closed when Close returned")
		}
	}
	if n != queueLen {
		t.Errorf("%d messages after Close, want the %d queued ones", n, queueLen)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := Send(l.Path(), Field{"READY", "1"}); err == nil {
		t.Error("Send to a closed listener succeeded")
	}
}

// pending returns the size of the next datagram waiting in l's socket, 0 if
// none.
func pending(t *testing.T, l *Listener) int {
	t.Helper()
	raw, err := l.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := raw.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}

// TestPassedFDsClosed sends the write end of a pipe along with a
// notification: once the listener has closed its copy and we close ours, the
// read end sees EOF. A leaked copy would keep the pipe open.
func TestPassedFDsClosed(t *testing.T) {
	l := listen(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	err = unix.Sendmsg(fd, []byte("FDSTORE=1\n"), unix.UnixRights(int(w.Fd())), &unix.SockaddrUnix{Name: l.Path()}, 0)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if m := receive(t, l); !slices.Equal(m.Fields, []Field{{"FDSTORE", "1"}}) || m.PID != os.Getpid() {
		t.Errorf("got %+v", m)
	}
	r.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("pipe read after notification = %d, %v; want EOF (received fd not closed)", n, err)
	}
}

func TestOversizedDropped(t *testing.T) {
	l := listen(t)
	// Just over the limit (seen whole and dropped) and over the read
	// buffer (truncated and dropped).
	for _, size := range []int{maxDatagram + 1, readBuffer + 1000} {
		big := Field{"STATUS", strings.Repeat("x", size-len("STATUS=\n"))}
		if err := Send(l.Path(), big); err != nil {
			t.Fatal(err)
		}
	}
	// Exactly at the limit is accepted.
	edge := Field{"STATUS", strings.Repeat("y", maxDatagram-len("STATUS=\n"))}
	if err := Send(l.Path(), edge); err != nil {
		t.Fatal(err)
	}
	if err := Send(l.Path(), Field{"READY", "1"}); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, l); !slices.Equal(m.Fields, []Field{edge}) {
		t.Errorf("first message has %d fields, want the %d-byte one", len(m.Fields), maxDatagram)
	}
	if m := receive(t, l); !m.Ready() {
		t.Errorf("after oversized datagrams got %q, want READY=1", m.Fields)
	}
}

func TestSendErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.sock")
	err := Send(missing, Field{"READY", "1"})
	if err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Send to missing path: %v", err)
	}
	l := listen(t)
	// A relative name is refused even where it would resolve: NOTIFY_SOCKET
	// is never relative, and the sender's working directory is arbitrary.
	t.Chdir(filepath.Dir(l.Path()))
	if err := Send("notify.sock", Field{"READY", "1"}); err == nil || !strings.Contains(err.Error(), "notify.sock") {
		t.Errorf("Send to relative path: %v", err)
	}
	for _, f := range []Field{{"", "1"}, {"A=B", "1"}, {"READY", "1\nMAINPID=1"}, {"STATUS", "a\rb"}, {"STATUS", "a\x00b"}} {
		if err := Send(l.Path(), f); err == nil {
			t.Errorf("Send(%q) succeeded", f)
		}
	}
	select {
	case m := <-l.Messages():
		t.Errorf("invalid field was sent: %q", m.Fields)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestListenErrors(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The socket is new: a second listener in the same place fails
	// rather than stealing or unlinking the first one's socket.
	if l2, err := Listen(sock); err == nil {
		l2.Close()
		t.Error("second Listen on the same path succeeded")
	}
	if err := Send(l.Path(), Field{"READY", "1"}); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, l); !m.Ready() {
		t.Errorf("first listener got %q", m.Fields)
	}
	if _, err := Listen(filepath.Join(dir, "nonexistent", "notify.sock")); err == nil {
		t.Error("Listen in a missing directory succeeded")
	}
}

// TestListenAbstract: an abstract listener leaves no file anywhere, and its
// messages carry the sender's PID and UID.
func TestListenAbstract(t *testing.T) {
	name := fmt.Sprintf("@dirlockd-test-listen-%d", os.Getpid())
	l, err := Listen(name)
	if err != nil {
		t.Fatal(err)
	}
	if l.Path() != name {
		t.Errorf("Path() = %q, want %q", l.Path(), name)
	}
	if err := Send(l.Path(), Field{"READY", "1"}); err != nil {
		t.Fatal(err)
	}
	m := receive(t, l)
	if !m.Ready() || m.PID != os.Getpid() || m.UID != os.Geteuid() {
		t.Errorf("got %+v; want READY=1 from PID %d UID %d", m, os.Getpid(), os.Geteuid())
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	// Closed: the name is free again, and nobody listens on it.
	if err := Send(name, Field{"READY", "1"}); err == nil {
		t.Error("Send to a closed abstract listener succeeded")
	}
}
