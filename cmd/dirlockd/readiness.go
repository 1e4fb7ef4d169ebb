package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

func (r *runner) markReady(via string) {
	if r.ready || r.stopping {
		return
	}
	r.ready = true
	r.setStatus(pidfile.Ready)
	r.log.Info("the server is ready", "via", via)
	r.upstreamSend(notify.Field{Key: "READY", Value: "1"})
	r.passEarly(via != "started")
}

func (r *runner) setStatus(s pidfile.Status) {
	r.stopping = r.stopping || s == pidfile.Stopping
	r.rec.SetStatus(s)
}

// notified handles a datagram from the server's NOTIFY_SOCKET. The socket is
// abstract, so any process of the network namespace can reach it: only a
// sender of our own user (or root, who could do anything anyway) or a
// process of the server's tree is heard.
func (r *runner) notified(m notify.Message) {
	if m.PID <= 0 || m.UID != os.Geteuid() && m.UID != 0 && !proc.DescendsFrom(m.PID, os.Getpid()) {
		r.log.Warn("ignored a notification from a process outside the server's tree", "pid", m.PID, "uid", m.UID, "fields", m.Fields)
		return
	}
	r.log.Debug("notification from the server", "pid", m.PID, "fields", m.Fields)
	if err := notify.Forward(r.upstream, m, os.Getpid()); err != nil {
		r.log.Warn("cannot forward the notification to systemd", "err", err)
	}
	switch {
	case m.Ready():
		r.markReady("notify")
	case m.Stopping() && !r.stopping:
		r.setStatus(pidfile.Stopping)
	}
}

func (r *runner) upstreamSend(fields ...notify.Field) {
	if r.upstream == "" {
		return
	}
	fields = append(fields, notify.Field{Key: "MAINPID", Value: strconv.Itoa(os.Getpid())})
	if err := notify.Send(r.upstream, fields...); err != nil {
		r.log.Warn("cannot notify systemd", "err", err)
	}
}

func notifyAddress() string {
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
