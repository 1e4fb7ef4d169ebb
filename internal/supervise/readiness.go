package supervise

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

func (s *Supervisor) markReady(via string) {
	if s.ready || s.stopping {
		return
	}
	s.ready = true
	s.setStatus(pidfile.Ready)
	s.Log.Info("the server is ready", "via", via)
	s.upstreamSend(notify.Field{Key: "READY", Value: "1"})
	s.passEarly(via != "started")
}

func (s *Supervisor) setStatus(st pidfile.Status) {
	s.stopping = s.stopping || st == pidfile.Stopping
	s.Record.SetStatus(st)
}

// notified handles a datagram from the server's NOTIFY_SOCKET. The socket is
// abstract, so any process of the network namespace can reach it: only a
// sender of our own user (or root, who could do anything anyway) or a
// process of the server's tree is heard.
func (s *Supervisor) notified(m notify.Message) {
	if m.PID <= 0 || m.UID != os.Geteuid() && m.UID != 0 && !proc.DescendsFrom(m.PID, os.Getpid()) {
		s.rejects.add(s.Log, m)
		return
	}
	s.Log.Debug("notification from the server", "pid", m.PID, "fields", m.Fields)
	if err := notify.Forward(s.Upstream, m, os.Getpid()); err != nil {
		s.Log.Warn("cannot forward the notification to systemd", "err", err)
	}
	switch {
	case m.Ready():
		s.markReady("notify")
	case m.Stopping() && !s.stopping:
		s.setStatus(pidfile.Stopping)
	}
}

// rejectLog reports notifications from outside the server's tree without
// letting their senders flood the log (20,000 forged datagrams once made
// 18,000 lines in 2 s): the first is logged, the rest are counted, and the
// count is logged at most once an interval, and once more at the end.
type rejectLog struct {
	every time.Duration // 0: rejectSummaryEvery; tests set less

	mu       sync.Mutex
	log      *slog.Logger
	n        int       // rejected since the last line
	since    time.Time // when the first of them came
	pid, uid int       // the last sender, for the summary
	timer    *time.Timer
}

// rejectSummaryEvery is how often at most rejected notifications are
// summarised.
const rejectSummaryEvery = time.Minute

func (l *rejectLog) add(log *slog.Logger, m notify.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.log == nil {
		l.log = log
		log.Warn("ignored a notification from a process outside the server's tree; more are counted, not logged", "pid", m.PID, "uid", m.UID, "fields", fmt.Sprintf("%+v", m.Fields))
		return
	}
	if l.n == 0 {
		l.since = time.Now()
	}
	l.n++
	l.pid, l.uid = m.PID, m.UID
	if l.timer == nil {
		every := l.every
		if every == 0 {
			every = rejectSummaryEvery
		}
		l.timer = time.AfterFunc(every, l.summarise)
	}
}

// summarise logs the count of notifications ignored since the last line.
func (l *rejectLog) summarise() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = nil
	if l.n == 0 {
		return
	}
	l.log.Warn(fmt.Sprintf("ignored %d more notifications from processes outside the server's tree since %s", l.n, l.since.Format(time.TimeOnly)),
		"count", l.n, "last_pid", l.pid, "last_uid", l.uid)
	l.n = 0
}

// stop logs what is still counted and stops the timer.
func (l *rejectLog) stop() {
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	l.summarise()
}

func (s *Supervisor) upstreamSend(fields ...notify.Field) {
	if s.Upstream == "" {
		return
	}
	fields = append(fields, notify.Field{Key: "MAINPID", Value: strconv.Itoa(os.Getpid())})
	if err := notify.Send(s.Upstream, fields...); err != nil {
		s.Log.Warn("cannot notify systemd", "err", err)
	}
}

// NotifyAddress is a fresh abstract address for the server's
// NOTIFY_SOCKET: nothing on disk that a crash could leave behind, or that a
// cleaner of /tmp could remove from under a server that runs for months.
func NotifyAddress() string {
	b := make([]byte, 8)
	rand.Read(b)
	return fmt.Sprintf("@dirlockd/notify/%d/%s", os.Getpid(), hex.EncodeToString(b))
}

// pollTCP closes ready once addr accepts a connection.
func pollTCP(ctx context.Context, addr string, ready chan<- struct{}) {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			close(ready)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
