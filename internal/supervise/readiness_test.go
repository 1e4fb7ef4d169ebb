package supervise

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/notify"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// TestRejectLog: of 10,000 rejected notifications the first is logged and
// the rest summarised, at most once an interval, and once at the end.
func TestRejectLog(t *testing.T) {
	const every = 300 * time.Millisecond
	var buf testutil.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	l := rejectLog{every: every}
	m := notify.Message{PID: 4242, UID: 1234, Fields: []notify.Field{{Key: "READY", Value: "1"}}}
	start := time.Now()
	for range 10000 {
		l.add(log, m)
	}
	if n := len(buf.Lines()); n != 1 && time.Since(start) < every {
		t.Fatalf("%d lines for 10,000 rejects within %v, want 1:\n%s", n, every, strings.Join(buf.Lines(), "\n"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(buf.Lines()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	lines := buf.Lines()
	if len(lines) != 2 || !strings.Contains(lines[0], "pid=4242") || !strings.Contains(lines[1], "count=9999") {
		t.Fatalf("want the first reject, then a summary of 9999:\n%s", strings.Join(lines, "\n"))
	}
	if since := time.Since(start); since < every {
		t.Fatalf("summary after %v, before the interval %v", since, every)
	}
	summarised := time.Now()
	for range 5 {
		l.add(log, m)
	}
	l.stop()
	lines = buf.Lines()
	if len(lines) != 3 || !strings.Contains(lines[2], "count=5") {
		t.Fatalf("want a last summary of 5 at the end:\n%s", strings.Join(lines, "\n"))
	}
	if time.Since(summarised) < every {
		time.Sleep(every - time.Since(summarised) + 100*time.Millisecond)
	}
	if n := len(buf.Lines()); n != 3 {
		t.Fatalf("%d lines after stop, want 3", n)
	}
}
