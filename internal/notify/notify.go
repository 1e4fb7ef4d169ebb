// Package notify speaks systemd's sd_notify protocol on both ends, so that
// dirlockd can sit between a database server and systemd without either of
// them noticing.
//
// The protocol is tiny: the supervisor binds an AF_UNIX datagram socket and
// hands its address to the service in $NOTIFY_SOCKET; the service sends
// datagrams of newline-separated KEY=VALUE assignments to it ("READY=1" once
// it accepts connections, "STOPPING=1" when it begins to shut down,
// "STATUS=..." free text, and so on). The address is a filesystem path, or an
// abstract socket name written with a leading '@' that stands for the NUL
// byte the kernel expects.
//
// dirlockd plays supervisor to the server it wraps: [Listen] binds a socket
// (dirlockd uses an abstract one, which leaves nothing on disk when it
// dies), the server gets [Listener.Path] as its NOTIFY_SOCKET, and each
// datagram arrives on [Listener.Messages] as a [Message] carrying the
// sender's PID and UID, which the kernel attests through SCM_CREDENTIALS and
// the sender cannot forge. That is how dirlockd learns that the server is
// ready or stopping, and whether the sender may say so.
//
// When dirlockd itself runs as a Type=notify systemd unit it plays service to
// systemd: [Forward] passes the server's notifications upstream, so the unit
// behaves as if the server were talking to systemd directly. The one change
// is MAINPID, which always names dirlockd: systemd must keep tracking
// dirlockd, the unit's real main process, or it would lose its supervisor
// when the server was told MAINPID=itself.
package notify

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
)

const (
	// maxDatagram is the largest notification accepted. systemd drops
	// anything larger (its buffer is PIPE_BUF), so a service that works
	// under systemd never sends more; accepting more would only let a
	// misbehaving child make dirlockd see something systemd would not.
	maxDatagram = 4096

	// readBuffer is much larger than maxDatagram so that an oversized
	// datagram is seen whole (its length tells us to drop it) instead of
	// being cut to a plausible-looking prefix; anything larger still is
	// caught by MSG_TRUNC.
	readBuffer = 64 << 10

	// maxFDs is the kernel's per-message limit on passed descriptors
	// (SCM_MAX_FD). Room for all of them keeps the credentials from being
	// squeezed out of a truncated control buffer.
	maxFDs = 253

	// queueLen lets a burst of notifications wait for the consumer without
	// holding up the reader.
	queueLen = 16
)

// Field is one KEY=VALUE assignment of a notification.
type Field struct{ Key, Value string }

// Message is one notification datagram.
type Message struct {
	// PID is the sender's process ID as attested by the kernel
	// (SCM_CREDENTIALS), in dirlockd's PID namespace; 0 if unknown.
	PID int
	// UID is the sender's user ID as attested by the kernel; -1 if
	// unknown.
	UID int
	// Fields are the datagram's assignments in the order sent, duplicates
	// included.
	Fields []Field
}

// Get returns the value of key; if the key was sent more than once the last
// value wins, as the later assignment is the sender's latest word.
func (m Message) Get(key string) (string, bool) {
	for i := len(m.Fields) - 1; i >= 0; i-- {
		if m.Fields[i].Key == key {
			return m.Fields[i].Value, true
		}
	}
	return "", false
}

// Ready reports READY=1: the service has finished starting up.
func (m Message) Ready() bool { return m.is("READY", "1") }

// Stopping reports STOPPING=1: the service has begun shutting down.
func (m Message) Stopping() bool { return m.is("STOPPING", "1") }

func (m Message) is(key, want string) bool {
	v, ok := m.Get(key)
	return ok && v == want
}

// Parse splits a notification datagram into its assignments, in order.
//
// Lines are separated by '\n' and also by '\r', because that is how systemd
// splits them (strv_split on "\n\r"): a sender writing "READY=1\r\n" is ready
// as far as systemd is concerned, and dirlockd must agree with the
// supervisor it stands in for. Consequently no value ever contains '\r'.
// Empty lines, lines without '=', and lines with an empty key carry no
// assignment and are skipped. Everything after the first '=' is the value,
// verbatim, spaces included.
func Parse(b []byte) []Field {
	var fields []Field
	for line := range strings.FieldsFuncSeq(string(b), func(r rune) bool { return r == '\n' || r == '\r' }) {
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			continue
		}
		fields = append(fields, Field{k, v})
	}
	return fields
}

// Listener receives a child's notifications.
type Listener struct {
	conn *net.UnixConn
	path string
	msgs chan Message

	done   chan struct{} // closed by Close: stop delivering
	exited chan struct{} // closed by the reader when it has returned

	once     sync.Once
	closeErr error
}

// Listen binds a new notification socket at addr: a filesystem path, or an
// abstract name written "@name".
//
// Anyone who can reach the socket can send to it. A socket file is created
// with the process umask, so its directory should be private to dirlockd
// and the child; an abstract name can be reached by every process of the
// network namespace, so the receiver should judge each message by its
// sender ([Message.PID], [Message.UID]). The socket has SO_PASSCRED set so
// every message carries the sender's credentials.
//
// The caller must keep receiving from Messages until Close: a child's
// sd_notify blocks once the socket's queue is full, just as it would under a
// stalled systemd.
func Listen(addr string) (*Listener, error) {
	if !strings.HasPrefix(addr, "@") {
		abs, err := filepath.Abs(addr)
		if err != nil {
			return nil, fmt.Errorf("notify: listen on %s: %w", addr, err)
		}
		// Absolute because the path goes into another process's
		// environment and that process may change directory before it
		// sends.
		addr = abs
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	l := &Listener{
		conn:   conn,
		path:   addr,
		msgs:   make(chan Message, queueLen),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	if err := setPassCred(conn); err != nil {
		conn.Close()
		l.removeFile()
		return nil, fmt.Errorf("notify: listen on %s: SO_PASSCRED: %w", addr, err)
	}
	go l.read()
	return l, nil
}

// removeFile removes the socket's file, which closing a datagram socket
// does not; an abstract socket has none.
func (l *Listener) removeFile() error {
	if strings.HasPrefix(l.path, "@") {
		return nil
	}
	if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// setPassCred turns on SO_PASSCRED. It happens before the path is handed to
// anyone, so no message can arrive without credentials.
func setPassCred(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		return err
	}
	return serr
}

// Path returns the socket's address (an absolute path, or "@name"), the
// value for the child's NOTIFY_SOCKET.
func (l *Listener) Path() string { return l.path }

// Messages returns the channel on which notifications arrive. It is closed
// once the listener stops reading: after Close, or if the socket fails.
func (l *Listener) Messages() <-chan Message { return l.msgs }

// Close stops reading, closes the socket and removes its file, if any. Messages
// still queued in the channel remain readable. Close returns only after the
// reader goroutine has exited; calling it again returns the first result.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		// Closing the conn makes the reader's pending ReadMsgUnix fail
		// with net.ErrClosed; done releases it if it is stuck handing a
		// message to a consumer that has stopped listening.
		l.closeErr = l.conn.Close()
		<-l.exited
		if err := l.removeFile(); err != nil && l.closeErr == nil {
			l.closeErr = err
		}
	})
	return l.closeErr
}

func (l *Listener) read() {
	defer close(l.exited)
	defer close(l.msgs)
	buf := make([]byte, readBuffer)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(maxFDs*4))
	for {
		n, oobn, flags, _, err := l.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			// net.ErrClosed after Close. Any other error on a local
			// datagram socket means it is unusable; retrying could
			// spin, so stop and let the closed channel say so.
			return
		}
		pid, uid := control(oob[:oobn])
		if n > maxDatagram || flags&unix.MSG_TRUNC != 0 {
			continue
		}
		m := Message{PID: pid, UID: uid, Fields: Parse(buf[:n])}
		select {
		case l.msgs <- m:
		case <-l.done:
			return
		}
	}
}

// control extracts the sender's PID and UID from a message's ancillary data and
// closes any file descriptors that came with it: notification fds (for
// FDSTORE=1) are not kept, and leaving them open would leak one per message.
func control(oob []byte) (pid, uid int) {
	pid, uid = 0, -1
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return pid, uid
	}
	for i := range cmsgs {
		c := &cmsgs[i]
		if c.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch c.Header.Type {
		case unix.SCM_CREDENTIALS:
			if cred, err := unix.ParseUnixCredentials(c); err == nil {
				pid, uid = int(cred.Pid), int(cred.Uid)
			}
		case unix.SCM_RIGHTS:
			if fds, err := unix.ParseUnixRights(c); err == nil {
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
	}
	return pid, uid
}

// Send sends fields as one notification datagram to socket, a filesystem
// path or an abstract address written "@name", the two forms NOTIFY_SOCKET
// takes for AF_UNIX. Like libsystemd's sd_notify, it blocks while the
// receiver's queue is full.
//
// Fields are checked so that no value can smuggle in an extra assignment:
// keys must be non-empty without '=', and neither keys nor values may hold
// '\n', '\r' or NUL (systemd drops a whole datagram that contains NUL).
func Send(socket string, fields ...Field) error {
	if !strings.HasPrefix(socket, "/") && !strings.HasPrefix(socket, "@") {
		return fmt.Errorf("notify: send to %q: not an absolute path or @abstract address", socket)
	}
	var b strings.Builder
	for _, f := range fields {
		if f.Key == "" || strings.ContainsAny(f.Key, "=\n\r\x00") || strings.ContainsAny(f.Value, "\n\r\x00") {
			return fmt.Errorf("notify: send to %s: invalid field %q=%q", socket, f.Key, f.Value)
		}
		b.WriteString(f.Key)
		b.WriteByte('=')
		b.WriteString(f.Value)
		b.WriteByte('\n')
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("notify: send to %s: %w", socket, err)
	}
	defer unix.Close(fd)
	// No explicit SCM_CREDENTIALS: the kernel attaches the sender's real
	// credentials itself when the receiver has SO_PASSCRED.
	err = eintr.Retry(func() error {
		return unix.Sendto(fd, []byte(b.String()), unix.MSG_NOSIGNAL, &unix.SockaddrUnix{Name: socket})
	})
	if err != nil {
		return fmt.Errorf("notify: send to %s: %w", socket, err)
	}
	return nil
}

// Forward re-sends m's fields to upstream, replacing any MAINPID the child
// sent with MAINPID=mainPID. dirlockd passes its own PID: it is the unit's
// main process, and a child's MAINPID=<self> would make systemd track the
// child instead and lose sight of dirlockd.
//
// upstream is dirlockd's own $NOTIFY_SOCKET; when it is empty dirlockd is
// not running under systemd and Forward does nothing.
func Forward(upstream string, m Message, mainPID int) error {
	if upstream == "" {
		return nil
	}
	fields := make([]Field, 0, len(m.Fields)+1)
	for _, f := range m.Fields {
		// BARRIER=1 asks systemd to wait for a descriptor to close, and
		// descriptors are not forwarded: passing it on would make systemd
		// complain about a barrier without one.
		if f.Key != "MAINPID" && f.Key != "BARRIER" {
			fields = append(fields, f)
		}
	}
	if len(fields) == 0 {
		return nil
	}
	fields = append(fields, Field{"MAINPID", strconv.Itoa(mainPID)})
	return Send(upstream, fields...)
}
