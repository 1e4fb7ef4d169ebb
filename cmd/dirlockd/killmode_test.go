package main

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/supervise"
	"github.com/dirlockd/dirlockd/pidfile"
)

// TestRecordedSignals: a record of an older dirlockd (or of another holder)
// has no stop_signal, reload_signal or kill_mode, and means the defaults; a
// record of this one round-trips through the pidfile format; a value this
// version cannot read falls back to the default rather than to nothing.
func TestRecordedSignals(t *testing.T) {
	def := serverSignals{stop: unix.SIGTERM, reload: unix.SIGHUP, mode: supervise.ControlGroup}
	if got := recordedSignals(nil); got != def {
		t.Errorf("no record: %+v, want %+v", got, def)
	}
	if got := recordedSignals(&pidfile.Record{Extra: map[string]string{supervise.ChildPIDKey: "12"}}); got != def {
		t.Errorf("an older record: %+v, want %+v", got, def)
	}
	rec := &pidfile.Record{PID: 1, DataDir: "/d", LockMethod: pidfile.Flock, Status: pidfile.Ready, Token: "t", Version: pidfile.Version, ShmID: -1,
		Extra: map[string]string{stopSignalKey: supervise.SignalName(unix.SIGINT), reloadSignalKey: supervise.SignalName(unix.SIGUSR1), killModeKey: string(supervise.Mixed)}}
	back, err := pidfile.Parse(rec.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	want := serverSignals{stop: unix.SIGINT, reload: unix.SIGUSR1, mode: supervise.Mixed}
	if got := recordedSignals(back); got != want {
		t.Errorf("round trip: %+v, want %+v", got, want)
	}
	bad := &pidfile.Record{Extra: map[string]string{stopSignalKey: "SIGBOGUS", reloadSignalKey: "99", killModeKey: "cgroup"}}
	if got := recordedSignals(bad); got != def {
		t.Errorf("unreadable values: %+v, want the defaults %+v", got, def)
	}
}
