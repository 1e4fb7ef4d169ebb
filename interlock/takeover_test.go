package interlock

import (
	"context"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

func TestTakeoverWatch(t *testing.T) {
	now := time.Now()
	me := self{host: "here", bootID: "boot-here"}
	rec := func(host, boot string, st pidfile.Status, beat time.Time, every string) *pidfile.Record {
		r := &pidfile.Record{Hostname: host, BootID: boot, Status: st, Extra: map[string]string{}}
		if !beat.IsZero() {
			r.Extra[heartbeatKey] = beat.UTC().Format(time.RFC3339Nano)
		}
		if every != "" {
			r.Extra[heartbeatIntervalKey] = every
		}
		return r
	}
	fresh := now.Add(-2 * time.Second)
	nfs := pidfile.Filesystem{Magic: 0x6969, Type: "nfs4"}
	for _, c := range []struct {
		name string
		opts Options
		rec  *pidfile.Record
		want time.Duration
	}{
		{"no record", Options{}, nil, 0},
		{"this host", Options{}, rec("here", "boot-here", pidfile.Ready, fresh, "1s"), 0},
		{"other host, clean stop", Options{}, rec("there", "boot-there", pidfile.Stopped, fresh, "1s"), 0},
		{"other host, no heartbeat", Options{}, rec("there", "boot-there", pidfile.Ready, time.Time{}, ""), 0},
		{"other host, old heartbeat", Options{}, rec("there", "boot-there", pidfile.Ready, now.Add(-2*HeartbeatFresh), "1s"), 0},
		{"this host before a reboot", Options{Recheck: time.Second}, rec("here", "boot-before", pidfile.Ready, fresh, "1s"), 3 * time.Second},
		{"3 x own recheck", Options{Recheck: 2 * time.Second}, rec("there", "b", pidfile.Ready, fresh, "1s"), 6 * time.Second},
		{"3 x its interval", Options{Recheck: time.Second}, rec("there", "b", pidfile.Ready, fresh, "5s"), 15 * time.Second},
		{"default", Options{}, rec("there", "b", pidfile.Starting, fresh, ""), DefaultTakeoverAfter},
		{"explicit", Options{TakeoverAfter: 700 * time.Millisecond}, rec("there", "b", pidfile.Ready, fresh, "200ms"), 700 * time.Millisecond},
		{"explicit, but below twice its interval", Options{TakeoverAfter: time.Second}, rec("there", "b", pidfile.Ready, fresh, "2s"), 4 * time.Second},
		{"heartbeat from a clock ahead of ours", Options{Recheck: time.Second}, rec("there", "b", pidfile.Ready, now.Add(time.Hour), "1s"), 3 * time.Second},
	} {
		if got := c.opts.takeoverWatch(pidfile.Filesystem{Type: "ext4"}, c.rec, me, now); got != 0 {
			t.Errorf("%s: takeoverWatch on a local filesystem = %v, want 0", c.name, got)
		}
		if got := c.opts.takeoverWatch(nfs, c.rec, me, now); got != c.want {
			t.Errorf("%s: takeoverWatch = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestHeartbeat: the heartbeat and its interval land in the record, and
// Check still accepts the record afterwards.
func TestHeartbeat(t *testing.T) {
	dir := testutil.DataDir(t)
	l, err := Acquire(context.Background(), dir, Options{Recheck: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if l.Takeover() != nil {
		t.Errorf("Takeover = %v on a fresh local directory", l.Takeover())
	}
	for range 3 {
		before := time.Now()
		if err := l.Heartbeat(); err != nil {
			t.Fatal(err)
		}
		rec, _, err := l.File().ReadRecord()
		if err != nil {
			t.Fatal(err)
		}
		at, every := heartbeat(rec)
		if at.Before(before.Add(-time.Millisecond)) || at.After(time.Now()) || every != 250*time.Millisecond {
			t.Fatalf("record after Heartbeat: heartbeat %v (called at %v), interval %v", at, before, every)
		}
		if err := l.Check(); err != nil {
			t.Fatalf("Check after Heartbeat: %v", err)
		}
	}
}
